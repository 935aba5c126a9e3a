"""Ctrl-C on `pulse produce`: what was sent is delivered, and the line it prints says how much.

The real CLI in its own process group against the test broker; SIGINT to the group, as a
terminal's Ctrl-C sends it. The topic then holds exactly the events the line reports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from config import REPO_ROOT, Settings
from tests.integration.test_job import read_topic


def test_ctrl_c_delivers_what_was_sent_and_reports_it(settings: Settings, tmp_path: Path) -> None:
    env = {**os.environ, **settings.to_env(), "PULSE_HOME": str(tmp_path)}
    producer = subprocess.Popen([sys.executable, "-m", "pulse", "produce", "synthetic", "--rate", "2000"],
                                cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True,
                                # as from a terminal (a test run started in the background inherits SIGINT ignored)
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(4)
        assert producer.poll() is None, producer.communicate()
        os.killpg(producer.pid, signal.SIGINT)
        stdout, stderr = producer.communicate(timeout=60)
    finally:
        if producer.poll() is None:  # it did not stop: it must not produce on into other tests
            os.killpg(producer.pid, signal.SIGKILL)
            producer.wait()
    assert producer.returncode == 130 and "Traceback" not in stderr, stderr
    found = re.fullmatch(r"stopped: produced (\d+), failed 0", stdout.strip())
    assert found is not None, stdout
    produced = int(found.group(1))
    assert produced > 0
    assert len(read_topic(settings, settings.topic_events, produced)) == produced
    print(f"\nCtrl-C: {stdout.strip()}; the topic holds {produced}")
