"""rq wiring: the Redis connection, queues, coalescing and the job functions."""
