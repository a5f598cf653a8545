"""Demo helpers: a throwaway OpenLDAP directory for the demo command and the tests."""
