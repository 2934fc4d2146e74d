"""Storage: the SQL database (sessions, turns, subjects, keys, image metadata) and the image files."""
