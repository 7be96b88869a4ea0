"""wsbroadcast's benchmark: the service against the seed's design (see bench/README.md)."""
