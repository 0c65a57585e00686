"""A private Postfix instance for the benchmarks: the comparison a user choosing a relay runs.

Postfix is what ses-relay is measured against: durable too (cleanup fsyncs every
queue file before smtpd answers 250), written in C, and a separate process per
connection. The instance made here is Debian's `postfix` package as it comes, with
its own directories and nothing of the system's:

- config_directory, queue_directory and data_directory live in a fresh temporary
  directory; `master -c DIR` is started as our child (`-d`: in the foreground, so
  we hold its pid and its process group; `-e`: it exits by itself after the run's
  time bound), never `postfix start` on /etc/postfix, and /etc/postfix is only read
  (meta_directory: the list of files and permissions `postfix check` verifies);
- smtpd listens on 127.0.0.1 on a free port; mynetworks = 127.0.0.0/8 may relay;
  every message goes to `relayhost = [127.0.0.1]:<port of smtp-sink>` (no local
  delivery: mydestination is empty, local_transport refuses);
- no chroot (master.cf's fifth column is `n`: nothing to copy into the queue dir);
- it logs through postlogd to a file in its directory, one line per event as
  Postfix does (the relay logs at info as well), so a failed start can be read.

Running it needs root (master binds and drops to `mail_owner`), the `postfix` user
and the `postdrop` group, which Debian's package creates. `unavailable()` says why
not when it cannot run, and the benchmark goes on without it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import common

MASTER = "/usr/lib/postfix/sbin/master"
POSTFIX = "/usr/sbin/postfix"
SMTP_SINK = "/usr/sbin/smtp-sink"
MAIL_OWNER = "postfix"
SETGID_GROUP = "postdrop"
META_DIRECTORY = "/etc/postfix"  # read only: postfix-files, the list `postfix check` verifies
SINK_BACKLOG = 256
_MESG = re.compile(rb"mesg=(\d+)")

# The services a relay-only Postfix uses, as in Debian's master.cf without chroot; the
# smtpd line is added with its address. `smtp` delivers to the relayhost (smtp-sink).
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def main_cf(root: Path, sink_port: int) -> str:
    """main.cf of the private instance; everything not named is Postfix's default."""
    return (
        "compatibility_level = 3.6\n"
        f"queue_directory = {root / 'spool'}\n"
        f"data_directory = {root / 'data'}\n"
        f"meta_directory = {META_DIRECTORY}\n"
        f"mail_owner = {MAIL_OWNER}\n"
        f"setgid_group = {SETGID_GROUP}\n"
        "myhostname = bench-postfix.localdomain\n"
        "mydomain = localdomain\n"
        "mydestination =\n"
        "local_transport = error:local delivery is off in the benchmark instance\n"
        "alias_maps =\n"
        "alias_database =\n"
        "inet_interfaces = 127.0.0.1\n"
        "inet_protocols = ipv4\n"
        "mynetworks = 127.0.0.0/8\n"
        f"relayhost = [127.0.0.1]:{sink_port}\n"
        "smtpd_relay_restrictions = permit_mynetworks reject\n"
        "biff = no\n"
        f"maillog_file_prefixes = {root}\n"
        f"maillog_file = {root / 'maillog'}\n"
    )


def unavailable() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    for exe in (MASTER, POSTFIX, SMTP_SINK):
        if not os.access(exe, os.X_OK):
            return f"{exe} is not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "Postfix's master must start as root"
    try:
        pwd.getpwnam(MAIL_OWNER)
        grp.getgrnam(SETGID_GROUP)
    except KeyError:
        return f"the {MAIL_OWNER} user or the {SETGID_GROUP} group is missing (Debian's package makes them)"
    return None


def live_in_group(pgid: int) -> list[int]:
    """Processes of a process group that still run (an exited one waiting to be reaped is not)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


@dataclass
class Postfix:
    """A running private instance and the smtp-sink it relays to."""

    root: Path
    port: int
    master: subprocess.Popen[bytes]
    sink: subprocess.Popen[bytes]
    sink_port: int
    keep: bool = False

    @property
    def sink_out(self) -> Path:
        return self.root / "sink.out"

    def pids(self) -> list[int]:
        """master and its live daemons (smtpd, cleanup, qmgr, smtp, ...)."""
        return [self.master.pid, *common.descendants(self.master.pid)]

    def cpu_seconds(self) -> float:
        """CPU of the whole instance: live processes, and those master has reaped."""
        return common.tree_cpu_seconds(self.master.pid)

    def pss_mb(self) -> float:
        """Memory of the instance now, shared pages counted once (sum of PSS)."""
        return common.pss_mb(self.pids())

    def processes(self) -> int:
        return len(self.pids())

    def delivered(self) -> int:
        """Messages smtp-sink has taken (its -c counter: the last `mesg=N` it printed)."""
        with contextlib.suppress(OSError):
            with self.sink_out.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 512))
                found = _MESG.findall(f.read())
                if found:
                    return int(found[-1])
        return 0

    def queued(self) -> int:
        """Queue files still in the instance (incoming, active, deferred)."""
        spool = self.root / "spool"
        count = 0
        for name in ("incoming", "active", "deferred"):
            for _, _, files in os.walk(spool / name):
                count += len(files)
        return count

    def log_tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.root / "maillog").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_drained(self, accepted: int, budget: common.Budget, poll: float = 0.05) -> float | None:
        """Wait until the queue is empty and smtp-sink has at least `accepted` messages (a message
        for two domains is two deliveries); the monotonic time it got there, or None."""
        for _ in range(10_000_000):
            if self.delivered() >= accepted and self.queued() == 0:
                return time.monotonic()
            if budget.left() <= 0 or self.master.poll() is not None:
                return None
            time.sleep(poll)
        return None

    def stop(self) -> None:
        """SIGTERM to master (it passes it to its daemons, which exit in their own time), up
        to 15 s for the process group to empty, SIGKILL to what is left; then smtp-sink.
        Only processes this module started: master's group is its own session's."""
        try:
            common.stop_process(self.master, timeout=15)
            deadline = time.monotonic() + 15
            while live_in_group(self.master.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if live_in_group(self.master.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.master.pid, signal.SIGKILL)
        finally:
            common.stop_process(self.sink, timeout=5)
            if self.keep:
                common.log(f"kept the Postfix instance in {self.root}")
            else:
                shutil.rmtree(self.root, ignore_errors=True)


def _wait_banner(port: int, master: subprocess.Popen[bytes], timeout: float) -> bool:
    """True once smtpd answers 220 on the port (master binds it, smtpd answers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and master.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection((common.LOCALHOST, port), timeout=2) as s:
            s.settimeout(2)
            if s.recv(64).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                return True
        time.sleep(0.1)
    return False


def start(max_seconds: float, *, keep: bool = False, timeout: float = 30.0) -> Postfix:
    """A fresh instance relaying to a fresh smtp-sink; both stop by themselves after max_seconds."""
    why = unavailable()
    if why is not None:
        raise RuntimeError(f"Postfix cannot run: {why}")
    root = Path(tempfile.mkdtemp(prefix="ses-relay-bench-postfix-"))
    os.chmod(root, 0o755)  # the postfix user reaches its queue and data dirs
    for sub in ("etc", "spool", "data"):
        (root / sub).mkdir()
    owner = pwd.getpwnam(MAIL_OWNER)
    os.chown(root / "data", owner.pw_uid, owner.pw_gid)
    sink_port = common.free_port()
    port = common.free_port()
    (root / "etc" / "main.cf").write_text(main_cf(root, sink_port))
    (root / "etc" / "master.cf").write_text(f"127.0.0.1:{port} inet n - n - - smtpd\n{MASTER_CF}")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
    bound = str(max(10, int(max_seconds)))
    with (root / "sink.out").open("wb") as out:
        # -c: a running count of messages on stdout; -u: drop to the postfix user.
        # smtp-sink has no time bound of its own: coreutils' timeout gives it one.
        sink_cmd = [SMTP_SINK, "-c", "-u", MAIL_OWNER, f"{common.LOCALHOST}:{sink_port}", str(SINK_BACKLOG)]
        if shutil.which("timeout"):
            sink_cmd = ["timeout", bound, *sink_cmd]
        sink = subprocess.Popen(
            sink_cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    master: subprocess.Popen[bytes] | None = None
    try:
        # `postfix check` makes the queue's subdirectories with their owners and modes.
        check = subprocess.run(
            [POSTFIX, "-c", str(root / "etc"), "check"], env=env, capture_output=True, timeout=timeout
        )
        if check.returncode != 0:
            raise RuntimeError(f"postfix check failed: {check.stderr.decode(errors='replace')[:300]}")
        with (root / "master.out").open("wb") as out:
            master = subprocess.Popen(
                [MASTER, "-d", "-c", str(root / "etc"), "-e", bound],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                start_new_session=True,
            )  # fmt: skip
        instance = Postfix(root, port, master, sink, sink_port, keep)
        if not _wait_banner(port, master, timeout):
            tail = instance.log_tail()
            instance.stop()
            raise RuntimeError(f"Postfix did not answer on port {port}:\n{tail}")
        common.log(
            f"postfix: master pid {master.pid} on port {port}, smtp-sink pid {sink.pid} on {sink_port}"
        )
        return instance
    except BaseException:
        if master is not None and master.poll() is None:
            Postfix(root, port, master, sink, sink_port, keep).stop()
        else:
            common.stop_process(sink, timeout=5)
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
        raise
