// Package deploy holds no code: its tests check the deployment files beside it against the real
// tools and the real binary. deploy/prometheus (rules, alerts, their promtool unit tests and the
// compose scrape configuration), deploy/grafana (the provisioned dashboard), deploy/nginx (the load
// balancer of docker-compose.yml) and deploy/nats (the NATS configurations).
package deploy
