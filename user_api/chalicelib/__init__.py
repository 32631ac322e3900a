"""user_api's own code: the users table and password hashing. Shared code lives in svckit."""
