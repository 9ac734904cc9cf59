"""Parent side: one child process per env, its pipe, timeouts, kill and reap."""
