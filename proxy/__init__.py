"""bindguard: account-security rules in front of LDAP directories."""
# First, before anything imports twisted.internet.endpoints (which deletes LISTEN_PID and
# LISTEN_FDS from the environment): proxy.notify keeps them for the PAM socket systemd passes.
from proxy import notify as _notify  # noqa: F401
