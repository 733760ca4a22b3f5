// What a node id is: it names etcd keys (`nodes/<id>`), claims' values and log lines, so it is kept plain.
export const NODE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
