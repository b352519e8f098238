"""What the API and the workers both import: settings, database models, stream protocol, text splitting."""
