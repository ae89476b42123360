"""Runs a command and reports its peak resident set size, as the kernel
counted it (getrusage of the waited child), on stderr as `peak_rss_kb N`.

Usage: python peak_rss.py PROGRAM ARGS...
"""
import resource
import subprocess
import sys

result = subprocess.run(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
sys.stderr.write(f"peak_rss_kb {peak}\n")
sys.exit(result.returncode if result.returncode >= 0 else 128 - result.returncode)
