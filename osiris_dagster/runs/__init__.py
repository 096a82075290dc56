"""A run's life on this host: who owns it, what it leaves behind, what happens when it dies."""
