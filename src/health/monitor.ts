import { readFile, stat } from 'node:fs/promises';
import type { CheckConfig, HealthConfig } from '../config/types.js';
import { monoNow } from '../agent/clock.js';
import type { HealthEvent } from './events.js';
import { lastLine, probe, type ProbeOptions } from './probes.js';
import {
  decideDrain,
  initialCheckState,
  stepCheck,
  type CheckState,
  type HealthDrain,
  type HealthDrainReason,
  type ProbeResult,
} from './state.js';

// Runs every check on its own timer (start to start, one probe at a time per check) and the maintenance-file
// poll, feeds the pure state machines, and reports the node's drain wish through onDrain. It emits events and
// never logs; the agent turns the drain into its node key.

export interface HealthMonitorOptions {
  health: HealthConfig;
  emit: (e: HealthEvent) => void;
  /** The drain reason changed (null = serve). */
  onDrain: (reason: HealthDrainReason | null) => void;
  /** Something status shows changed (a result flipped, a state changed): publish it. */
  onReport?: () => void;
  /** How often the maintenance file is looked for; default min(500 ms, shortest check interval). */
  maintenancePollMs?: number;
}

/** One check as `status` shows it (written into the node's status key). */
export interface CheckStatus {
  name: string;
  type: CheckConfig['type'];
  state: 'up' | 'down';
  /** Wall-clock time the state was entered (ISO). */
  since: string;
  /** The last probe, null before the first. */
  last: { ok: boolean; at: string; durationMs: number; output: string; failure?: string } | null;
  transitions: number;
  flaps: number;
}

export interface HealthSnapshot {
  checks: CheckStatus[];
  /** The node's health drain: `unhealthy:<check>` / `maintenance`, null = serving. */
  drain: string | null;
  drainSince: string | null;
  maintenance: boolean;
}

interface Running {
  cfg: CheckConfig;
  state: CheckState;
  /** Date.now() - monoNow() when the state was entered, to show wall-clock times. */
  wallOffset: number;
  timer: NodeJS.Timeout | undefined;
  opts: ProbeOptions;
}

const iso = (mono: number, offset: number): string => new Date(mono + offset).toISOString();

export class HealthMonitor {
  private readonly checks: Running[];
  private drainState: HealthDrain = { drained: false };
  private drainWall = 0;
  private maintenance = false;
  private maintTimer: NodeJS.Timeout | undefined;
  private holdTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly abort = new AbortController();

  constructor(private readonly o: HealthMonitorOptions) {
    const now = monoNow();
    this.checks = o.health.checks.map((cfg) => ({
      cfg,
      state: initialCheckState(cfg.initial, now),
      wallOffset: Date.now() - now,
      timer: undefined,
      opts: {},
    }));
  }

  /** Whether the node has anything to watch. */
  get enabled(): boolean {
    return this.checks.length > 0 || this.o.health.maintenanceFile !== undefined;
  }

  get reason(): HealthDrainReason | null {
    return this.drainState.drained ? this.drainState.reason : null;
  }

  /**
   * Read CA files, take the initial states as the first decision, then start the timers. A check whose CA cannot
   * be read fails every probe (its output says why) rather than stopping the agent.
   */
  async start(): Promise<void> {
    for (const c of this.checks) {
      if (c.cfg.type === 'https' && c.cfg.ca !== undefined) {
        c.opts = { ca: await readFile(c.cfg.ca, 'utf8').catch(() => '') };
      }
    }
    if (this.o.health.maintenanceFile !== undefined) await this.pollMaintenance(false);
    this.evaluate(true);
    for (const c of this.checks) this.schedule(c, 0);
  }

  stop(): void {
    this.stopped = true;
    // No check process outlives the agent's stop.
    this.abort.abort();
    for (const c of this.checks) clearTimeout(c.timer);
    clearTimeout(this.maintTimer);
    clearTimeout(this.holdTimer);
  }

  snapshot(): HealthSnapshot {
    return {
      checks: this.checks.map((c) => ({
        name: c.cfg.name,
        type: c.cfg.type,
        state: c.state.state,
        since: iso(c.state.since, c.wallOffset),
        last: c.state.last
          ? {
              ok: c.state.last.ok,
              at: iso(c.state.last.at, c.wallOffset),
              durationMs: Math.round(c.state.last.durationMs * 100) / 100,
              output: c.state.last.output,
              ...(c.state.last.ok ? {} : { failure: c.state.last.failure }),
            }
          : null,
        transitions: c.state.transitions,
        flaps: c.state.flaps,
      })),
      drain: this.reason,
      drainSince: this.drainState.drained ? new Date(this.drainWall).toISOString() : null,
      maintenance: this.maintenance,
    };
  }

  private schedule(c: Running, waitMs: number): void {
    if (this.stopped) return;
    c.timer = setTimeout(() => void this.runOnce(c), Math.max(0, waitMs));
    c.timer.unref();
  }

  private async runOnce(c: Running): Promise<void> {
    const started = monoNow();
    // A probe that throws (spawn refusing its arguments, a URL node rejects) is a failed probe, never a crash.
    const r: ProbeResult = await probe(c.cfg, { ...c.opts, signal: this.abort.signal }).catch((err: unknown) => ({
      ok: false,
      durationMs: monoNow() - started,
      failure: 'error',
      output: lastLine(err instanceof Error ? err.message : String(err)),
    }));
    if (this.stopped) return;
    const now = monoNow();
    const flipped = c.state.last === null || c.state.last.ok !== r.ok;
    const step = stepCheck(c.state, r, { rise: c.cfg.rise, fall: c.cfg.fall, flapWindowMs: this.o.health.holdMs }, now);
    c.state = step.next;
    this.o.emit({
      event: 'checkResult',
      check: c.cfg.name,
      ok: r.ok,
      state: c.state.state,
      ...(r.ok ? {} : { failure: r.failure }),
      durationMs: Math.round(r.durationMs * 100) / 100,
      output: r.output,
    });
    if (step.transition) {
      c.wallOffset = Date.now() - now;
      this.o.emit({
        event: 'checkTransition',
        check: c.cfg.name,
        state: step.transition,
        flap: step.flap,
        output: r.output,
      });
      this.evaluate();
    }
    if (flipped || step.transition) this.o.onReport?.();
    this.schedule(c, started + c.cfg.intervalMs - monoNow());
  }

  private async pollMaintenance(reschedule = true): Promise<void> {
    const file = this.o.health.maintenanceFile!;
    const present = await stat(file).then(
      () => true,
      () => false,
    );
    if (this.stopped) return;
    if (present !== this.maintenance) {
      this.maintenance = present;
      this.o.emit({ event: 'maintenance', present, file });
      if (reschedule) this.evaluate();
    }
    const every = this.o.maintenancePollMs ?? Math.min(500, ...this.checks.map((c) => c.cfg.intervalMs));
    this.maintTimer = setTimeout(() => void this.pollMaintenance(), every);
    this.maintTimer.unref();
  }

  private evaluate(initial = false): void {
    if (this.stopped) return;
    clearTimeout(this.holdTimer);
    const down = this.checks.filter((c) => c.state.state === 'down').map((c) => c.cfg.name);
    const before = this.reason;
    const step = decideDrain(this.drainState, {
      down,
      maintenance: this.maintenance,
      now: monoNow(),
      holdMs: this.o.health.holdMs,
      initial,
    });
    if (step.change === 'drain') this.drainWall = Date.now();
    this.drainState = step.next;
    if (step.change === 'hold') {
      this.holdTimer = setTimeout(() => this.evaluate(), step.holdLeftMs);
      this.holdTimer.unref();
    }
    if (step.change !== 'none') {
      this.o.emit({
        event: 'healthDrain',
        change: step.change,
        ...(step.next.drained ? { reason: step.next.reason } : {}),
        ...(step.holdLeftMs !== undefined ? { holdLeftMs: Math.round(step.holdLeftMs) } : {}),
      });
    }
    if (this.reason !== before) this.o.onDrain(this.reason);
  }
}
