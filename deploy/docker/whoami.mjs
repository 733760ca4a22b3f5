// A tiny HTTP service for the compose demo: answers with the node that accepted the connection, so the client
// container shows how the VIP's clients spread over the nodes.
import { createServer } from 'node:http';
import process from 'node:process';
const node = process.env.CLUSTERIP_HA_NODE_ID ?? 'unknown';
createServer((req, res) => res.end(`${node} served ${req.socket.remoteAddress}\n`)).listen(8080, '0.0.0.0');
