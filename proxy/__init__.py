"""bindguard: account-security rules in front of LDAP directories."""
