"""The PAM side of bindguard: thin clients of the daemon's socket (standard library only)."""
