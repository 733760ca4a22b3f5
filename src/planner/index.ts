export { planVip, planCluster, type Move, type VipPlan, type VipPlanInput, type ClusterAssignment } from './plan.js';
export { buildPool, isBalanced, mergeNodes, type PlannerNode, type Pool, type PoolKind } from './balance.js';
export { rendezvous } from './rendezvous.js';
