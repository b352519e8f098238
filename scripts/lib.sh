# Helpers shared by the run and test scripts.

# host and port of a redis:// or postgresql:// URL
url_host() { local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; echo "${rest%%:*}"; }
url_port() { local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; [[ "$rest" == *:* ]] && echo "${rest##*:}" || echo "$2"; }

# true when something accepts TCP connections at host:port
reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Flower never runs without credentials: FLOWER_BASIC_AUTH (user:password) as given, else generated and printed once.
flower_credentials() {
  if [ -z "${FLOWER_BASIC_AUTH:-}" ]; then
    local password
    password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    export FLOWER_BASIC_AUTH="admin:$password"
    echo "Flower: no FLOWER_BASIC_AUTH was given; this run's credentials are  $FLOWER_BASIC_AUTH"
  fi
}
