import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { HealthEvent } from '../health/events.js';

// Metrics of the service checks (DESIGN §14). Labels: check names (few, from the node config) and closed sets.

const P = 'clusterip_ha_';
const CHECK_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface HealthMetrics {
  observe(ev: HealthEvent): void;
  /** This node no longer leads: its panic figures are the next leader's to report. */
  notLeader(): void;
}

export function attachHealthMetrics(registry: Registry): HealthMetrics {
  const up = new Gauge({
    name: `${P}check_up`,
    help: '1 while the check is up (rise/fall state), 0 while down',
    labelNames: ['check'],
    registers: [registry],
  });
  const transitions = new Counter({
    name: `${P}check_transitions_total`,
    help: 'Check state changes, by the state entered',
    labelNames: ['check', 'to'],
    registers: [registry],
  });
  const flaps = new Counter({
    name: `${P}check_flaps_total`,
    help: 'Check state changes within the hold time of the previous change',
    labelNames: ['check'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: `${P}check_duration_seconds`,
    help: 'Run time of one probe, by result',
    labelNames: ['check', 'result'],
    buckets: CHECK_BUCKETS,
    registers: [registry],
  });
  const drained = new Gauge({
    name: `${P}health_drained`,
    help: '1 while this node is drained by its checks or maintenance file',
    registers: [registry],
  });
  const drains = new Counter({
    name: `${P}health_drains_total`,
    help: 'Health drain changes of this node (drain, undrain, reason, hold)',
    labelNames: ['change'],
    registers: [registry],
  });
  const panicKept = new Gauge({
    name: `${P}health_panic_nodes`,
    help: 'Leader: failing nodes kept serving by the panic threshold (minHealthyNodes); 0 = no panic',
    registers: [registry],
  });
  const panics = new Counter({
    name: `${P}health_panics_total`,
    help: 'Leader: times the panic threshold started keeping failing nodes serving',
    registers: [registry],
  });
  let kept = 0;
  const observe = (ev: HealthEvent): void => {
    switch (ev.event) {
      case 'checkResult':
        up.set({ check: ev.check }, ev.state === 'up' ? 1 : 0);
        duration.observe({ check: ev.check, result: ev.ok ? 'ok' : (ev.failure ?? 'error') }, ev.durationMs / 1000);
        return;
      case 'checkTransition':
        up.set({ check: ev.check }, ev.state === 'up' ? 1 : 0);
        transitions.inc({ check: ev.check, to: ev.state });
        if (ev.flap) flaps.inc({ check: ev.check });
        return;
      case 'maintenance':
        return;
      case 'healthDrain':
        drains.inc({ change: ev.change });
        if (ev.change === 'drain') drained.set(1);
        if (ev.change === 'undrain') drained.set(0);
        return;
      case 'healthPanic':
        if (ev.panic && kept === 0) panics.inc();
        kept = ev.panic ? ev.kept.length : 0;
        panicKept.set(kept);
        return;
    }
  };
  return {
    observe,
    notLeader: () => {
      kept = 0;
      panicKept.set(0);
    },
  };
}
