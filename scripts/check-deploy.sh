#!/usr/bin/env bash
# Check the deploy files with the real tools: `nginx -t` on deploy/nginx/moltbot.conf
# (wrapped in a minimal main config, a throw-away self-signed certificate, the upstream
# pointed at loopback) and `promtool check config` / `check rules` on deploy/prometheus/.
# Needs nginx, promtool (Debian `prometheus`) and openssl: scripts/setup-deps.sh --test.
# The Helm chart, compose file and Grafana dashboard are checked by `cargo test`
# (crates/moltbot-deploy-tests).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "--- nginx -t deploy/nginx/moltbot.conf"
mkdir -p "$tmp/nginx/certs" "$tmp/nginx/logs"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -keyout "$tmp/nginx/certs/privkey.pem" -out "$tmp/nginx/certs/fullchain.pem" 2>/dev/null
# Same file, with what only exists inside the compose network swapped for loopback and the
# temporary folder (nginx -t resolves upstream host names and opens the certificate).
sed -e 's#server moltbot:18789#server 127.0.0.1:18789#' \
    -e "s#/etc/nginx/certs/#$tmp/nginx/certs/#" \
    deploy/nginx/moltbot.conf >"$tmp/nginx/moltbot.conf"
grep -q 'server 127.0.0.1:18789' "$tmp/nginx/moltbot.conf"
cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log;
events { worker_connections 64; }
http {
    access_log $tmp/nginx/logs/access.log;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    include $tmp/nginx/moltbot.conf;
}
CONF
"$NGINX" -t -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf"

echo "--- promtool check config deploy/prometheus/prometheus.yml"
# The scrape job reads the gateway token from a file next to the config; promtool checks
# that it exists.
cp deploy/prometheus/prometheus.yml deploy/prometheus/alerts.yml "$tmp/"
echo "test-token" >"$tmp/moltbot-token"
promtool check config "$tmp/prometheus.yml"
promtool check rules deploy/prometheus/alerts.yml
echo "--- promtool test rules deploy/prometheus/alerts.test.yml"
promtool test rules deploy/prometheus/alerts.test.yml
echo "deploy checks: ok"
