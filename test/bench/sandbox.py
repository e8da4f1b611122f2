# The benchmarks' sandbox (python3 -c <this> <MiB>, in the Python sandbox
# image): it holds MiB MiB resident in one bytes object of random bytes
# (os.urandom: no zero page, no compression flatters a capture or a restore),
# so a capture has exactly that much to dump; prints a counter once a second; and a
# thread stamps CLOCK_BOOTTIME (the host's clock too: no time namespace) in
# a tight loop with 1 ms naps, printing each gap of 5 ms or more as
# "gap <start us> <length us>". It says "stamper-ready" first.
import os
import sys
import threading
import time

held = os.urandom(int(sys.argv[1]) << 20)
lock = threading.Lock()


def say(line):
    # One write per line, under a lock: the two threads' lines never mix.
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def now_us():
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1000


def stamp():
    say("stamper-ready")
    last = now_us()
    while True:
        time.sleep(0.001)
        t = now_us()
        if t - last >= 5000:
            say("gap %d %d" % (last, t - last))
        last = t


threading.Thread(target=stamp, daemon=True).start()
i = 0
while True:
    i += 1
    say(str(i))
    time.sleep(1)
