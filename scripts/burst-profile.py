#!/usr/bin/env python3
"""Where the time of the harness's burst goes: daemon or sync handler.

The harness (../shared/bench) times the burst (50,000 new files in 500 new nested directories on a
synced 100,000-file tree) but counts the handler's CPU only for daemons whose spawned process reaps
rsync itself; ours reaps it in the helper, so its rsync CPU is missing there. This script runs the
same trees and the same burst (the harness's own generator, benchlib.trees) with each daemon in a
cpuacct cgroup of its own, and reports per repetition:

  generator s, converged s (from the burst's start), after its end s,
  CPU s of the whole cgroup (daemon + every handler), of the daemon's own processes, and the rest
  (the handlers: rsync), and how many handler processes ran.

  scripts/burst-profile.py [--reps N] [--files 100000] [--daemon NAME=BINARY ...]

Needs root, rsync, and cgroup v1's cpuacct hierarchy (/sys/fs/cgroup/cpuacct) or cgroup v2. The
daemons take turns within each repetition; figures are medians over the repetitions. It builds
nothing: give a release binary (default target/release/clsync) and /usr/bin/clsync.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for cand in (os.path.join(REPO, '..', 'shared', 'bench'), '/work/shared/bench'):
    if os.path.isdir(os.path.join(cand, 'benchlib')):
        sys.path.insert(0, cand)
        break
from benchlib import trees, util  # noqa: E402  (the harness's generator and comparison)

CLK_TCK = os.sysconf('SC_CLK_TCK')


def cgroup_root():
    for p in ('/sys/fs/cgroup/cpuacct', '/sys/fs/cgroup/cpu,cpuacct'):
        if os.path.exists(os.path.join(p, 'cpuacct.usage')):
            return p, 'v1'
    if os.path.exists('/sys/fs/cgroup/cgroup.controllers'):
        return '/sys/fs/cgroup', 'v2'
    sys.exit('no cpuacct hierarchy and no cgroup v2 mount')


class Cgroup:
    def __init__(self, name):
        root, self.kind = cgroup_root()
        self.path = os.path.join(root, name)
        os.mkdir(self.path)

    def cpu_s(self):
        if self.kind == 'v1':
            with open(os.path.join(self.path, 'cpuacct.usage')) as f:
                return int(f.read()) / 1e9
        with open(os.path.join(self.path, 'cpu.stat')) as f:
            for line in f:
                k, v = line.split()
                if k == 'usage_usec':
                    return int(v) / 1e6
        return 0.0

    def procs(self):
        with open(os.path.join(self.path, 'cgroup.procs')) as f:
            return [int(x) for x in f.read().split()]

    def remove(self):
        for _ in range(200):
            if not self.procs():
                break
            time.sleep(0.05)
        os.rmdir(self.path)


def proc_cpu(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (FileNotFoundError, ProcessLookupError):
        return None


def mount_tmpfs(path):
    os.makedirs(path, exist_ok=True)
    subprocess.check_call(['mount', '-t', 'tmpfs', '-o', 'size=4g', 'tmpfs', path])


def argv_for(binary, src, dst):
    # the harness's 'live' role of clsync-compatible daemons
    return [binary, '-H', '/NULL/', '-Mrsyncdirect', '-S', '/usr/bin/rsync', '-W', src, '-D', dst,
            '-w0', '-t0', '-T0', '-x', '23', '-x', '24']


def one(name, binary, base, files, burst_files, burst_dirs, rep):
    src, dst = os.path.join(base, 'src'), os.path.join(base, 'dst')
    util.empty_dir(src)
    util.empty_dir(dst)
    trees.gen_tree(src, files, 'small')
    cg = Cgroup('burstprof-%d-%s-%d' % (os.getpid(), name, rep))
    procs_file = os.path.join(cg.path, 'cgroup.procs')

    def enter():
        with open(procs_file, 'w') as f:
            f.write('0')

    log = open(os.path.join(base, '%s-%d.log' % (name, rep)), 'wb')
    p = subprocess.Popen(argv_for(binary, src, dst), stdout=log, stderr=subprocess.STDOUT,
                         preexec_fn=enter)
    try:
        r = trees.wait_converged(src, dst, 300, hashing=False)
        if not r['converged']:
            raise SystemExit('%s: initial sync did not converge' % name)
        time.sleep(1.0)
        # settled: no handler runs, so every process in the cgroup is the daemon's
        daemons = cg.procs()
        own0 = {q: proc_cpu(q) for q in daemons}
        cg0 = cg.cpu_s()
        seen = set(cg.procs())
        t0 = util.now()
        stats = trees.burst(src, files=burst_files, dirs=burst_dirs)
        t_end = util.now()
        r = trees.wait_converged(src, dst, 300, hashing=True, t_origin=t0)
        cg1 = cg.cpu_s()
        own1 = {q: proc_cpu(q) for q in daemons}
        seen.update(cg.procs())
        per = sorted((((own1[q] or own0[q]) - own0[q]), q) for q in daemons)
        own = sum(c for c, _ in per)
        return {'daemon': name, 'gen': t_end - t0, 'converged': r['converged'],
                'conv': r['t'], 'after': (r['t'] - (t_end - t0)) if r['t'] else None,
                'cpu': cg1 - cg0, 'own': own, 'handlers': cg1 - cg0 - own,
                'files': stats['files'], 'dirs': stats['dirs'],
                'per': ' '.join('%d:%.2f' % (q, c) for c, q in reversed(per))}
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        cg.remove()


def median(v):
    v = sorted(x for x in v if x is not None)
    return v[len(v) // 2] if v else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--files', type=int, default=100_000)
    ap.add_argument('--burst-files', type=int, default=50_000)
    ap.add_argument('--burst-dirs', type=int, default=500)
    ap.add_argument('--daemon', action='append', default=[],
                    help='NAME=BINARY (default: clsync=/usr/bin/clsync and ours=target/release/clsync)')
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('needs root (tmpfs mounts, cgroups)')
    daemons = [d.split('=', 1) for d in a.daemon] or [
        ['clsync', '/usr/bin/clsync'], ['ours', os.path.join(REPO, 'target/release/clsync')]]
    base = tempfile.mkdtemp(prefix='burstprof-')
    mounts = [os.path.join(base, 'src'), os.path.join(base, 'dst')]
    rows = []
    try:
        for m in mounts:
            mount_tmpfs(m)
        for rep in range(a.reps):
            order = daemons if rep % 2 == 0 else list(reversed(daemons))
            for name, binary in order:
                row = one(name, binary, base, a.files, a.burst_files, a.burst_dirs, rep)
                rows.append(row)
                print('rep %d %-8s gen %.2f s  converged %s s  after end %s s  cpu %.2f s '
                      '(daemon %.2f [%s], handlers %.2f)' % (
                          rep, name, row['gen'],
                          '%.2f' % row['conv'] if row['conv'] else '-',
                          '%.2f' % row['after'] if row['after'] else '-',
                          row['cpu'], row['own'], row['per'], row['handlers']), flush=True)
    finally:
        for m in mounts:
            subprocess.call(['umount', m])
        subprocess.call(['rm', '-rf', base])
    print('\n| daemon | generator s | converged s (from start) | after its end s | CPU s, all | '
          'daemon CPU s | handler (rsync) CPU s |')
    print('|---|---|---|---|---|---|---|')
    for name, _ in daemons:
        mine = [r for r in rows if r['daemon'] == name]
        print('| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |' % (
            name, median([r['gen'] for r in mine]), median([r['conv'] for r in mine]),
            median([r['after'] for r in mine]), median([r['cpu'] for r in mine]),
            median([r['own'] for r in mine]), median([r['handlers'] for r in mine])))


if __name__ == '__main__':
    main()
