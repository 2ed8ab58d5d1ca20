#!/usr/bin/env python3
"""Checks standardwebhooks_receiver.py and the published test vectors.

Run: python3 -m unittest ci/test_standardwebhooks_receiver.py  (needs: pip install standardwebhooks)
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import tempfile
import time
import unittest
from datetime import datetime, timezone
from unittest import mock

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

RECEIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standardwebhooks_receiver.py")
SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

VECTORS = [
    (
        SECRET_A,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        '{"test": 2432232314}',
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ),
    (
        SECRET_B,
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1649367553,
        '{"email":"test@example.com","username":"test_user"}',
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    ),
]


def signed_headers(secrets: list[str], msg_id: str, ts: int, body: str) -> dict[str, str]:
    when = datetime.fromtimestamp(ts, tz=timezone.utc)
    sigs = " ".join(Webhook(s).sign(msg_id, when, body) for s in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sigs,
        "content-type": "application/json",
    }


class PublishedVectors(unittest.TestCase):
    def test_sign_reproduces_vectors(self) -> None:
        for secret, msg_id, ts, body, expected in VECTORS:
            when = datetime.fromtimestamp(ts, tz=timezone.utc)
            self.assertEqual(Webhook(secret).sign(msg_id, when, body), expected)

    def test_verify_accepts_vectors_at_their_own_time(self) -> None:
        # verify() compares the timestamp with datetime.now(); pin "now" to the vector's time
        # by replacing the module's datetime with a subclass whose now() is fixed.
        import standardwebhooks.webhooks as module

        for secret, msg_id, ts, body, expected in VECTORS:
            frozen = datetime.fromtimestamp(ts, tz=timezone.utc)

            class FrozenDatetime(datetime):
                @classmethod
                def now(cls, tz=None):  # type: ignore[override]
                    return frozen

            headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": expected}
            with mock.patch.object(module, "datetime", FrozenDatetime):
                self.assertEqual(Webhook(secret).verify(body.encode(), headers, json_parse=False), None)
            # And without the pin the library rejects the old timestamp, which is why it is needed.
            with self.assertRaisesRegex(WebhookVerificationError, "too old"):
                Webhook(secret).verify(body.encode(), headers)


class Receiver:
    def __init__(self, secrets: list[str], expect: int, timeout: float = 20) -> None:
        self.dir = tempfile.TemporaryDirectory()
        port_file = os.path.join(self.dir.name, "port")
        cmd = [sys.executable, RECEIVER, "--port-file", port_file, "--expect", str(expect)]
        cmd += ["--timeout", str(timeout)]
        for s in secrets:
            cmd += ["--secret", s]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(port_file):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("receiver did not write its port file")
            time.sleep(0.01)
        with open(port_file) as f:
            self.port = int(f.read())
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def post(self, body: str, headers: dict[str, str]) -> int:
        self.conn.request("POST", "/hook", body=body.encode(), headers=headers)
        resp = self.conn.getresponse()
        resp.read()
        return resp.status

    def finish(self) -> tuple[int, str, str]:
        self.conn.close()
        out, err = self.proc.communicate(timeout=30)
        self.dir.cleanup()
        return self.proc.returncode, out, err


class ReceiverTests(unittest.TestCase):
    def test_all_verified_exits_zero_over_one_connection(self) -> None:
        r = Receiver([SECRET_A], expect=3)
        now = int(time.time())
        for i in range(3):
            body = f'{{"n":{i}}}'
            self.assertEqual(r.post(body, signed_headers([SECRET_A], f"msg_{i}", now, body)), 204)
        code, out, err = r.finish()
        self.assertEqual(code, 0, err)
        self.assertIn("3 requests verified", out)
        self.assertNotIn("MfKQ9r8", out + err)

    def test_rotation_needs_every_secret(self) -> None:
        r = Receiver([SECRET_A, SECRET_B], expect=2)
        now = int(time.time())
        body = '{"rotating":true}'
        self.assertEqual(r.post(body, signed_headers([SECRET_A, SECRET_B], "msg_both", now, body)), 204)
        self.assertEqual(r.post(body, signed_headers([SECRET_B], "msg_only_b", now, body)), 401)
        code, _, err = r.finish()
        self.assertEqual(code, 1)
        self.assertIn("msg_only_b", err)
        self.assertNotIn("msg_both", err)

    def test_tampered_body_fails(self) -> None:
        r = Receiver([SECRET_A], expect=1)
        headers = signed_headers([SECRET_A], "msg_t", int(time.time()), '{"amount":1}')
        self.assertEqual(r.post('{"amount":9}', headers), 401)
        code, _, err = r.finish()
        self.assertEqual(code, 1)
        self.assertIn("No matching signature", err)

    def test_stale_timestamp_fails(self) -> None:
        r = Receiver([SECRET_A], expect=1)
        body = "{}"
        headers = signed_headers([SECRET_A], "msg_old", int(time.time()) - 3600, body)
        self.assertEqual(r.post(body, headers), 401)
        code, _, err = r.finish()
        self.assertEqual(code, 1)
        self.assertIn("too old", err)

    def test_too_few_requests_times_out(self) -> None:
        r = Receiver([SECRET_A], expect=2, timeout=1)
        body = "{}"
        self.assertEqual(r.post(body, signed_headers([SECRET_A], "msg_1", int(time.time()), body)), 204)
        code, _, err = r.finish()
        self.assertEqual(code, 1)
        self.assertIn("timed out after 1s with 1 of 2", err)

    def test_bad_secret_is_not_echoed(self) -> None:
        proc = subprocess.run(
            [sys.executable, RECEIVER, "--secret", "whsec_", "--port-file", "/dev/null", "--expect", "1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(proc.returncode, 1)
        self.assertIn("invalid --secret", proc.stderr)


if __name__ == "__main__":
    unittest.main()
