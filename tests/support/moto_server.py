"""Starts moto's server and exits when the test process that started it
goes away, so that no server outlives a test run (even one killed hard).

Usage: python moto_server.py PORT
"""
import os
import sys
import threading
import time

parent = os.getppid()


def watch_parent():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


threading.Thread(target=watch_parent, daemon=True).start()

from moto.server import main  # noqa: E402

sys.exit(main(["-H", "127.0.0.1", "-p", sys.argv[1]]))
