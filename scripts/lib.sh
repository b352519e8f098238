# Helpers shared by the run and test scripts.

# host and port of a redis:// or postgresql:// URL
url_host() { local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; echo "${rest%%:*}"; }
url_port() { local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; [[ "$rest" == *:* ]] && echo "${rest##*:}" || echo "$2"; }

# true when something accepts TCP connections at host:port
reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
