"""Who is this, may they, and is it on record: accounts, roles, sessions, break-glass."""
