"""bindguard-pam: the pam_exec helper (not yet available)."""
from __future__ import annotations

import sys


def main() -> int:
    """Refuse every login with a clear message until the PAM front end exists."""
    sys.stderr.write("bindguard-pam: the PAM front end is not available in this release; "
                     "login refused\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
