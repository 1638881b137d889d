use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Container, Probe, Secret, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use moltbot_deploy_tests::Chart;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

/// The rendered chart, each document parsed and typed.
#[derive(Default)]
struct Rendered {
    deployment: Option<Deployment>,
    service: Option<Service>,
    hpa: Option<HorizontalPodAutoscaler>,
    secret: Option<Secret>,
}

fn chart() -> Chart {
    Chart::load(&crate::repo().join("deploy/helm/moltbot")).unwrap()
}

/// Parse as `T`, and check that nothing was dropped on the way: k8s-openapi ignores unknown
/// fields, so a misspelt or misplaced key would otherwise pass unnoticed.
fn typed<T: DeserializeOwned + serde::Serialize>(doc: &Value, file: &str) -> T {
    let obj: T = serde_yaml_ng::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{file}: not a valid object: {e}\n{doc:?}"));
    let back = serde_json::to_value(&obj).unwrap();
    let orig = serde_json::to_value(doc).unwrap();
    assert_eq!(
        back, orig,
        "{file}: fields lost when typed (unknown or misplaced keys?)"
    );
    obj
}

fn render(overrides: &str) -> Rendered {
    let overrides: Value = serde_yaml_ng::from_str(overrides).unwrap();
    let mut out = Rendered::default();
    for (file, text) in chart().render("moltbot", &overrides).unwrap() {
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc = <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{file} renders invalid YAML: {e}\n{text}"));
            if doc.is_null() {
                continue; // a template whose `if` was false
            }
            match doc["kind"].as_str() {
                Some("Deployment") => out.deployment = Some(typed(&doc, &file)),
                Some("Service") => out.service = Some(typed(&doc, &file)),
                Some("HorizontalPodAutoscaler") => out.hpa = Some(typed(&doc, &file)),
                Some("Secret") => out.secret = Some(typed(&doc, &file)),
                other => panic!("{file}: unexpected kind {other:?}"),
            }
        }
    }
    out
}

fn container(d: &Deployment) -> &Container {
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

fn http_get_path(p: &Option<Probe>) -> (&str, &IntOrString) {
    let get = p.as_ref().unwrap().http_get.as_ref().unwrap();
    (get.path.as_deref().unwrap(), &get.port)
}

#[test]
fn default_values_render_a_hardened_autoscaled_deployment() {
    let r = render("{}");
    let d = r.deployment.expect("a Deployment");
    assert_eq!(d.metadata.name.as_deref(), Some("moltbot-api"));
    let spec = d.spec.as_ref().unwrap();
    // The HPA owns the replica count when autoscaling is on.
    assert_eq!(spec.replicas, None);
    let rolling = spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));

    let pod = spec.template.spec.as_ref().unwrap();
    assert!(pod.termination_grace_period_seconds.unwrap() >= 30);
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let c = container(&d);
    let port = IntOrString::String("http".into());
    for probe in [&c.readiness_probe, &c.liveness_probe, &c.startup_probe] {
        assert_eq!(http_get_path(probe), ("/health", &port));
    }
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 18789);
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    // A read-only root needs writable /tmp and /data.
    let mounts: Vec<&str> = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/data", "/tmp"]);
    let volumes = pod.volumes.as_ref().unwrap();
    assert!(volumes.iter().all(|v| v.empty_dir.is_some()));

    let env = c.env.as_ref().unwrap();
    assert!(env
        .iter()
        .any(|e| e.name == "MOLTBOT_DATA__DIR" && e.value.as_deref() == Some("/data")));
    // A terminating pod keeps serving while its probes fail, and the grace period covers
    // that delay plus the 30 s turn drain.
    let drain: i64 = env
        .iter()
        .find(|e| e.name == "MOLTBOT_GATEWAY__DRAIN_DELAY_SECS")
        .and_then(|e| e.value.as_deref())
        .expect("a drain delay")
        .parse()
        .unwrap();
    assert!(drain >= 5, "drain delay {drain}");
    assert!(pod.termination_grace_period_seconds.unwrap() >= drain + 30);
    let from = &c.env_from.as_ref().unwrap()[0];
    assert_eq!(
        from.secret_ref.as_ref().unwrap().name,
        "moltbot-tokens".to_owned()
    );
    let res = c.resources.as_ref().unwrap();
    assert!(res.requests.as_ref().unwrap().contains_key("memory"));
    let limits = res.limits.as_ref().unwrap();
    assert!(limits.contains_key("cpu") && limits.contains_key("memory"));
    assert!(
        !limits.contains_key("nvidia.com/gpu"),
        "GPU is off by default"
    );
    assert!(c.image.as_deref().unwrap().ends_with(":0.1.0"));

    let hpa = r.hpa.expect("an HPA");
    let hs = hpa.spec.unwrap();
    assert_eq!(hs.scale_target_ref.kind, "Deployment");
    assert_eq!(hs.scale_target_ref.name, "moltbot-api");
    assert_eq!((hs.min_replicas, hs.max_replicas), (Some(3), 10));
    let targets: Vec<(String, Option<i32>)> = hs
        .metrics
        .unwrap()
        .into_iter()
        .map(|m| {
            let r = m.resource.unwrap();
            (r.name, r.target.average_utilization)
        })
        .collect();
    assert_eq!(
        targets,
        [
            ("cpu".to_owned(), Some(70)),
            ("memory".to_owned(), Some(80))
        ]
    );

    let svc = r.service.expect("a Service").spec.unwrap();
    assert_eq!(svc.ports.as_ref().unwrap()[0].port, 18789);
    assert_eq!(
        svc.selector,
        spec.template.metadata.as_ref().unwrap().labels.clone()
    );

    let secret = r.secret.expect("a Secret");
    let keys: Vec<&String> = secret.string_data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["ADMIN_TOKEN", "MOLTBOT_GATEWAY_TOKEN"]);
}

#[test]
fn autoscaling_off_gpu_on_and_existing_secret_and_claim() {
    let r = render(
        "autoscaling: {enabled: false}\n\
         gpu: {enabled: true, count: 2}\n\
         secrets: {create: false, existingSecret: my-tokens}\n\
         persistence: {existingClaim: moltbot-data}\n\
         image: {tag: v9}\n\
         nodeSelector: {gpu: \"yes\"}",
    );
    assert!(r.hpa.is_none() && r.secret.is_none());
    let d = r.deployment.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    let c = container(&d);
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["nvidia.com/gpu"],
        Quantity("2".into())
    );
    assert_eq!(
        c.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        "my-tokens"
    );
    assert!(c.image.as_deref().unwrap().ends_with(":v9"));
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let data = &pod.volumes.as_ref().unwrap()[0];
    assert_eq!(
        data.persistent_volume_claim.as_ref().unwrap().claim_name,
        "moltbot-data"
    );
    assert_eq!(pod.node_selector.as_ref().unwrap()["gpu"], "yes");
}
