use serde_yaml_ng::Value;

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn compose_runs_the_gateway_behind_tls_nginx_on_8443() {
    let doc: Value = serde_yaml_ng::from_str(&crate::read("docker-compose.prod.yml")).unwrap();
    let svc = &doc["services"];
    let gw = &svc["moltbot"];
    let nginx = &svc["nginx"];

    // Health checks on /health, the gateway's plain and nginx's over TLS.
    let check = strings(&gw["healthcheck"]["test"]).join(" ");
    assert!(
        check.contains("http://127.0.0.1:18789/health"),
        "gateway healthcheck: {check}"
    );
    let check = strings(&nginx["healthcheck"]["test"]).join(" ");
    assert!(
        check.contains("https://127.0.0.1:8443/health"),
        "nginx healthcheck: {check}"
    );
    assert_eq!(
        nginx["depends_on"]["moltbot"]["condition"].as_str(),
        Some("service_healthy")
    );

    // Only nginx is published, on 8443; the gateway is reached inside the network.
    assert_eq!(strings(&nginx["ports"]), ["8443:8443"]);
    assert!(
        gw.get("ports").is_none(),
        "the gateway must not be published"
    );
    assert_eq!(strings(&gw["expose"]), ["18789"]);

    // Data in a named volume; the nginx config and certificates mounted read-only.
    assert_eq!(strings(&gw["volumes"]), ["moltbot-data:/data"]);
    assert!(doc["volumes"].get("moltbot-data").is_some());
    let mounts = strings(&nginx["volumes"]);
    assert!(mounts.contains(&"./deploy/nginx/moltbot.conf:/etc/nginx/conf.d/default.conf:ro"));
    assert!(mounts.iter().any(|m| m.ends_with(":/etc/nginx/certs:ro")));
    assert!(crate::repo().join("deploy/nginx/moltbot.conf").is_file());

    // Tokens from the environment, the gateway one required.
    let env = &gw["environment"];
    assert_eq!(
        env["MOLTBOT_GATEWAY_TOKEN"].as_str(),
        Some("${MOLTBOT_GATEWAY_TOKEN:?set MOLTBOT_GATEWAY_TOKEN}")
    );
    assert_eq!(env["ADMIN_TOKEN"].as_str(), Some("${ADMIN_TOKEN:-}"));
    assert_eq!(env["MOLTBOT_DATA__DIR"].as_str(), Some("/data"));
    let cmd = strings(&gw["command"]).join(" ");
    assert!(cmd.contains("--bind 0.0.0.0") && cmd.contains("--port 18789"));
}

#[test]
fn nginx_config_balances_chat_and_streams_unbuffered() {
    let conf = crate::read("deploy/nginx/moltbot.conf");
    let upstream = conf
        .split("upstream moltbot_gateway {")
        .nth(1)
        .and_then(|s| s.split('}').next())
        .expect("upstream moltbot_gateway");
    assert!(upstream.contains("least_conn;"));
    assert!(upstream.contains("server moltbot:18789"));
    let chat = conf
        .split("location = /api/v1/chat {")
        .nth(1)
        .and_then(|s| s.split('}').next())
        .expect("location = /api/v1/chat");
    assert!(chat.contains("proxy_pass http://moltbot_gateway;"));
    assert!(chat.contains("proxy_buffering off;"));
    assert!(conf.contains("listen 8443 ssl"));
    assert!(conf.contains("proxy_set_header Upgrade           $http_upgrade;"));
}

#[test]
fn dockerfile_builds_a_non_root_image_with_health_check() {
    let df = crate::read("Dockerfile");
    let lines: Vec<&str> = df.lines().map(str::trim).collect();
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    assert_eq!(lines.iter().filter(|l| l.starts_with("FROM ")).count(), 2);
    assert!(df.contains("clang libclang-dev cmake"));
    assert!(has("EXPOSE 18789"));
    assert!(has("VOLUME [\"/data\"]"));
    assert!(df.contains("MOLTBOT_DATA__DIR=/data"));
    assert!(df.contains("http://127.0.0.1:18789/health"));
    assert!(has("HEALTHCHECK "));
    assert!(has("USER 10001"), "runs as a non-root user");
    assert!(has("ARG BAKE_MODELS=0"));
    assert!(df.contains("models fetch"));
    // Every file the image copies from the build context exists.
    for l in &lines {
        if let Some(rest) = l.strip_prefix("COPY ") {
            if rest.starts_with("--from") || rest.starts_with(". ") {
                continue;
            }
            let src = rest
                .split_whitespace()
                .find(|w| !w.starts_with("--"))
                .unwrap();
            assert!(crate::repo().join(src).is_file(), "COPY source {src}");
        }
    }
}

/// The scale-out overlay wires every replica to the shared PostgreSQL and Kafka with the
/// gateway's own configuration keys, and waits for both to be healthy.
#[test]
fn the_scale_overlay_shares_postgres_and_kafka() {
    let doc: Value = serde_yaml_ng::from_str(&crate::read("docker-compose.scale.yml")).unwrap();
    let svc = &doc["services"];
    let env = &svc["moltbot"]["environment"];
    let url = env["MOLTBOT_DATA__DATABASE_URL"].as_str().unwrap();
    assert!(url.starts_with("postgres://moltbot:") && url.ends_with("@postgres:5432/moltbot"));
    assert_eq!(env["MOLTBOT_BUS__KIND"].as_str(), Some("kafka"));
    assert_eq!(env["MOLTBOT_BUS__BROKERS"].as_str(), Some("kafka:9092"));
    for dep in ["postgres", "kafka"] {
        assert_eq!(
            svc["moltbot"]["depends_on"][dep]["condition"].as_str(),
            Some("service_healthy"),
            "{dep}"
        );
        assert!(
            svc[dep]["healthcheck"]["test"].as_sequence().is_some(),
            "{dep}"
        );
    }
    assert_eq!(
        svc["postgres"]["environment"]["POSTGRES_PASSWORD"].as_str(),
        Some("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}")
    );
    // The keys are the gateway's own: its config loader takes them as they are.
    let env: Vec<(String, String)> = env
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .unwrap()
                .replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "pw");
            (k.as_str().unwrap().to_string(), v)
        })
        .collect();
    let empty = std::env::temp_dir().join(format!("moltbot-scale-{}.toml", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    let cfg = moltbot_core::config::Config::load_with_env(Some(&empty), &env);
    let _ = std::fs::remove_file(&empty);
    let cfg = cfg.unwrap();
    assert_eq!(cfg.bus.kind, moltbot_core::config::BusKind::Kafka);
    assert_eq!(cfg.bus.brokers, "kafka:9092");
    assert_eq!(cfg.bus.partitions, 12);
    assert_eq!(
        cfg.data
            .database_url
            .map(|u| u.expose().to_string())
            .as_deref(),
        Some("postgres://moltbot:pw@postgres:5432/moltbot")
    );
}
