import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { startCli } from './cliRun.js';

// `clusterip-ha demo` started and stopped the way a person does: run it, see the live view, press Ctrl-C.

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('clusterip-ha demo', () => {
  it('starts etcd and 3 agents, shows a healthy live status, and Ctrl-C removes everything it started', async () => {
    const demo = startCli(['demo']);
    try {
      // Healthy within a generous bound (etcd start + 3 node processes + convergence on a shared machine).
      await demo.waitFor((out) => /cluster demo {2}HEALTHY/.test(out), 90_000);
      const err = demo.stderr();
      const workdir = /working directory (\S+) \(removed on exit\)/.exec(err)?.[1];
      expect(workdir).toBeDefined();
      expect(existsSync(workdir!)).toBe(true);
      const pids = [...err.matchAll(/agent (n\d) pid (\d+)/g)].map((m) => Number(m[2]));
      expect(pids).toHaveLength(3);
      expect(pids.every(alive)).toBe(true);
      const etcdPid = Number(/etcd http:\/\/127\.0\.0\.1:\d+ pid (\d+)/.exec(err)?.[1]);
      expect(alive(etcdPid)).toBe(true);
      pids.push(etcdPid);
      expect(demo.stdout()).toMatch(/VIP 10\.77\.0\.100 .*16 buckets/);
      expect(demo.stdout()).toMatch(/VIP 10\.77\.0\.101 .*8 buckets/);

      demo.child.kill('SIGINT');
      const exit = await demo.exit(45_000);
      expect(exit.code).toBe(0);
      expect(demo.stderr()).toContain('stopped; temporary files removed');
      expect(existsSync(workdir!)).toBe(false);
      // Agents and etcd are gone.
      const deadline = Date.now() + 10_000;
      while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(pids.filter(alive)).toEqual([]);
    } finally {
      demo.child.kill('SIGKILL');
    }
  });

  it('a closed pipe (demo | tee, then Ctrl-C) stops it and removes everything it started', async () => {
    const demo = startCli(['demo']);
    try {
      await demo.waitFor((out) => /cluster demo {2}HEALTHY/.test(out), 90_000);
      const err = demo.stderr();
      const workdir = /working directory (\S+) \(removed on exit\)/.exec(err)![1]!;
      const pids = [...err.matchAll(/(?:agent n\d|etcd \S+) pid (\d+)/g)].map((m) => Number(m[1]));
      expect(pids).toHaveLength(4);
      // The reader goes away; the next line the piped watch prints (a change: here an agent killed, as the demo
      // suggests) meets EPIPE.
      demo.child.stdout!.destroy();
      const agentPids = [...err.matchAll(/agent n\d pid (\d+)/g)].map((m) => Number(m[1]));
      process.kill(agentPids[0]!, 'SIGKILL');
      const exit = await demo.exit(45_000);
      expect(exit.code).toBe(0);
      expect(demo.stderr()).not.toMatch(/EPIPE|Error:/);
      expect(existsSync(workdir)).toBe(false);
      const deadline = Date.now() + 10_000;
      while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(pids.filter(alive)).toEqual([]);
    } finally {
      demo.child.kill('SIGKILL');
    }
  });
});
