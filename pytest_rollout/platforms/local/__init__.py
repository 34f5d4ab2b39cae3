"""The local platform: replicas as processes on 127.0.0.1 behind HAProxy."""
