"""Pure policy decisions: functions of (rules, account state, attempt, now). No I/O, no clock."""
