"""A PostgreSQL server of the tests' own, in a temporary folder: Debian's
package (scripts/deps.sh installs it), started with initdb and pg_ctl on a free
port, as the `postgres` user when the tests run as root (PostgreSQL refuses root)."""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from harness import free_port


def bin_dir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class Postgres:
    def __init__(self):
        self.bin = bin_dir()
        assert self.bin, "PostgreSQL is not installed (scripts/deps.sh postgres installs it)"
        self.dir = tempfile.mkdtemp(prefix="sar-pg-")
        self.port = free_port()
        self.as_user = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        data = os.path.join(self.dir, "data")
        self.run("initdb", "-D", data, "-U", "sar", "--auth=trust", "-E", "UTF8")
        self.run("pg_ctl", "-D", data, "-l", os.path.join(self.dir, "log"), "-w", "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        self.data = data
        self.databases = 0

    def run(self, tool, *args):
        subprocess.run([*self.as_user, os.path.join(self.bin, tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def new_database(self):
        """A fresh database's URL."""
        self.databases += 1
        name = f"sar_{os.getpid()}_{self.databases}"
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "sar", name)
        return f"postgres://sar@127.0.0.1:{self.port}/{name}"

    def stop(self):
        subprocess.run([*self.as_user, os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)
