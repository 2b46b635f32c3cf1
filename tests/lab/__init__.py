"""The real components the end-to-end tests and benchmarks run on loopback.

- ``postfix``: a private Postfix instance from Debian's package (its own config, queue, log and
  port) relaying to ``provider_smtp``, plus the traffic mix the tests send through it;
- ``provider_smtp``: an SMTP server that answers like real mailbox providers;
- ``prometheus``: private Prometheus and Alertmanager servers (Debian's packages);
- ``dnsbl_server``: a DNS server answering real packets for fake blocklist zones;
- ``containers``: Debian base images (mmdebstrap), the project's image, pods run from the chart
  with podman;
- ``helm``: the Helm chart rendered and linted by the real Helm engine (helm-python-sdk).
"""
