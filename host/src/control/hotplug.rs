//! Hot-plug of the heartbeat channel (issue #21): vigild plugs `cgcs.heartbeat` into running domains that a policy
//! selects, through libvirt, so that a stock cloud needs no patched Nova and no hand-edited domain XML.
//!
//! When: at every (re)subscription to libvirt's events (domains already running, vigild's own start), and on each
//! domain's `Started` and `Resumed` (a start, a Nova hard reboot that rewrote the XML, the end of a migration).
//! What: the domain's live XML (`virsh dumpxml`) says whether the channel is there, whether the domain has a
//! virtio-serial controller (which cannot be hot-plugged), its Nova flavor (Nova's metadata) and Vigil's own
//! metadata element. A selected domain without the channel gets it (`virsh attach-device --live`), its host socket
//! in the documented layout `SOCKET_DIR/cgcs.heartbeat.<domain uuid>.sock`, which discovery's default pattern
//! finds; an existing channel of that name is reused, never doubled. Every attach, refusal and (opt-in) detach is
//! an event. The device XML reaches virsh on its standard input (no file written). One worker does the checks one after another (no two attaches race on one domain); a request for a
//! domain already queued is not queued twice. `virsh` runs as a child process with a timeout, as for the lifecycle
//! events: no `unsafe` in vigild.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Command, Shared};
use crate::config::ComputeSettings;
use crate::events::Event;
use crate::glob::Pattern;
use crate::upstream::keystone::{Keystone, KeystoneOptions};

/// The channel's name, as the guest sees it (`/dev/virtio-ports/cgcs.heartbeat`).
pub const CHANNEL_NAME: &str = "cgcs.heartbeat";
/// The namespace of Vigil's metadata element: `<vigil:heartbeat xmlns:vigil="..." enabled="yes"/>`.
pub const VIGIL_XMLNS: &str = "https://vigil.dev/xmlns/heartbeat/1";
/// Nova writes `<nova:instance>` in a namespace of this prefix (`.../nova/1.1`, `1.2`, ...).
const NOVA_XMLNS_PREFIX: &str = "http://openstack.org/xmlns/libvirt/nova/";
/// The longest a `virsh` call may take (a stuck libvirtd must not stop later checks for good).
const VIRSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a flavor's extra spec is believed.
const EXTRA_SPEC_TTL: Duration = Duration::from_secs(600);
/// Domains waiting for a check, at most.
const QUEUE: usize = 4096;
/// The fix for the commonest refusal.
pub const CONTROLLER_FIX: &str = "the domain has no virtio-serial controller, and a controller cannot be \
    hot-plugged: boot it with one (Nova: the image property hw_qemu_guest_agent=yes gives every VM one; libvirt: \
    <controller type='virtio-serial'/> in the domain XML), then start it again";

/// The policy and where sockets go.
#[derive(Clone, Debug)]
pub struct HotplugConfig {
    /// Domain-name globs.
    pub domains: Vec<Pattern>,
    /// Nova flavor-name globs.
    pub flavors: Vec<Pattern>,
    /// Honour Vigil's metadata element.
    pub metadata: bool,
    /// Ask the compute API for the flavor's `vigil:heartbeat` extra spec.
    pub compute: Option<ComputeSettings>,
    /// The host sockets' directory.
    pub socket_dir: PathBuf,
    /// Unplug channels vigild attached from domains no longer selected.
    pub detach: bool,
}

/// What a domain's live XML says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainXml {
    /// The domain's name.
    pub name: String,
    /// Its UUID (Nova's instance UUID).
    pub uuid: String,
    /// A virtio channel named [`CHANNEL_NAME`] is there: with its host socket, if it has one.
    pub channel: Option<Option<String>>,
    /// It has a virtio-serial controller.
    pub controller: bool,
    /// Nova's flavor name, from Nova's metadata.
    pub flavor: Option<String>,
    /// Vigil's metadata element: `enabled` is yes/true/1 (Some(true)) or anything else (Some(false)).
    pub vigil: Option<bool>,
}

/// Reads what matters of a domain's XML.
pub fn parse_domain(xml: &str) -> Result<DomainXml, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("domain XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "domain" {
        return Err("domain XML: the root is not <domain>".into());
    }
    fn children<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> Vec<roxmltree::Node<'a, 'i>> {
        n.children().filter(|c| c.is_element()).collect()
    }
    let text = |n: roxmltree::Node<'_, '_>| n.text().unwrap_or("").trim().to_string();
    let mut d = DomainXml::default();
    for c in children(root) {
        match c.tag_name().name() {
            "name" => d.name = text(c),
            "uuid" => d.uuid = text(c),
            "devices" => {
                for dev in children(c) {
                    match dev.tag_name().name() {
                        "controller" if dev.attribute("type") == Some("virtio-serial") => d.controller = true,
                        "channel" => {
                            let kids = children(dev);
                            let ours = kids.iter().any(|t| {
                                t.tag_name().name() == "target"
                                    && t.attribute("type") == Some("virtio")
                                    && t.attribute("name") == Some(CHANNEL_NAME)
                            });
                            if ours {
                                let path = kids
                                    .iter()
                                    .find(|s| s.tag_name().name() == "source")
                                    .and_then(|s| s.attribute("path"))
                                    .map(str::to_string);
                                d.channel = Some(path);
                            }
                        }
                        _ => {}
                    }
                }
            }
            "metadata" => {
                for m in children(c) {
                    let ns = m.tag_name().namespace().unwrap_or("");
                    match m.tag_name().name() {
                        "instance" if ns.starts_with(NOVA_XMLNS_PREFIX) => {
                            d.flavor = children(m)
                                .into_iter()
                                .find(|f| f.tag_name().name() == "flavor")
                                .and_then(|f| f.attribute("name"))
                                .map(str::to_string);
                        }
                        "heartbeat" if ns == VIGIL_XMLNS => {
                            let on = m.attribute("enabled").unwrap_or("").trim().to_ascii_lowercase();
                            d.vigil = Some(matches!(on.as_str(), "yes" | "true" | "1"));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if d.name.is_empty() || d.uuid.is_empty() {
        return Err("domain XML: no <name> or <uuid>".into());
    }
    Ok(d)
}

/// The `<channel>` element vigild plugs in (and unplugs: libvirt finds the device by it).
pub fn channel_xml(socket: &Path) -> String {
    let path = socket.display().to_string().replace('&', "&amp;").replace('\'', "&apos;").replace('<', "&lt;");
    format!(
        "<channel type='unix'><source mode='bind' path='{path}'/><target type='virtio' name='{CHANNEL_NAME}'/></channel>\n"
    )
}

/// The host socket of `uuid`'s channel in the documented layout.
pub fn socket_of(dir: &Path, uuid: &str) -> PathBuf {
    dir.join(format!("{CHANNEL_NAME}.{uuid}.sock"))
}

/// What would make a refused attach work, from libvirt's words.
pub fn fix_for(reason: &str) -> String {
    let r = reason.to_ascii_lowercase();
    if r.contains("virtio-serial") || r.contains("virtio serial") {
        CONTROLLER_FIX.into()
    } else if r.contains("permission denied") || r.contains("apparmor") || r.contains("selinux") {
        "QEMU may not create the socket there: give libvirt's qemu user write access to the socket directory \
         ([hotplug] socket_dir), and allow it in the security driver's profile"
            .into()
    } else if r.contains("already in use") || r.contains("file exists") {
        "a file is in the way of the socket: remove it".into()
    } else {
        "see libvirt's reason; attach by hand with `virsh attach-device DOMAIN CHANNEL.xml --live` to test".into()
    }
}

/// The queue of domains to check, and its worker.
pub struct Hotplug {
    tx: mpsc::Sender<String>,
    queued: Mutex<HashSet<String>>,
}

impl Hotplug {
    /// Starts the worker on the current tokio runtime.
    pub fn start(cfg: HotplugConfig, uri: String, shared: Arc<Shared>) -> Result<Arc<Hotplug>, String> {
        let compute = cfg.compute.as_ref().map(Compute::new).transpose()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let hp = Arc::new(Hotplug { tx, queued: Mutex::new(HashSet::new()) });
        let worker = Worker { cfg, uri, shared, compute, refused: HashMap::new(), hp: Arc::clone(&hp) };
        tokio::spawn(worker.run(rx));
        Ok(hp)
    }

    /// Asks for a check of `domain` (not queued twice).
    pub fn check(&self, domain: &str) {
        let mut q = self.queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.contains(domain) {
            return;
        }
        if self.tx.try_send(domain.to_string()).is_ok() {
            q.insert(domain.to_string());
        } else {
            warn!(domain, "hot-plug queue full: the domain is checked at the next resubscription");
        }
    }

    fn taken(&self, domain: &str) {
        self.queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(domain);
    }
}

/// Runs `virsh -c URI args...` with a timeout: stdout, or libvirt's message.
pub async fn virsh(uri: &str, args: &[&str]) -> Result<String, String> {
    virsh_with_input(uri, args, None).await
}

/// [`virsh`], with `input` on its standard input (a device's XML, given as the file `/dev/stdin`: no file is
/// written anywhere, so nothing in a shared temporary directory can be raced or replaced).
async fn virsh_with_input(uri: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let spawned = tokio::process::Command::new("virsh")
        .args(["-q", "-c", uri])
        .args(args)
        .stdin(if input.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = spawned.map_err(|e| format!("cannot run virsh: {e}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes()).await;
    }
    let run = child.wait_with_output();
    match tokio::time::timeout(VIRSH_TIMEOUT, run).await {
        Err(_) => Err(format!("virsh {} timed out after {} s", args.first().unwrap_or(&""), VIRSH_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(format!("virsh: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err.trim().trim_start_matches("error:").trim();
            Err(err.lines().map(|l| l.trim_start_matches("error:").trim()).collect::<Vec<_>>().join(": "))
        }
    }
}

struct Worker {
    cfg: HotplugConfig,
    uri: String,
    shared: Arc<Shared>,
    compute: Option<Compute>,
    /// The last refusal reported per domain (reported again only when it changes or after an attach).
    refused: HashMap<String, String>,
    hp: Arc<Hotplug>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<String>) {
        while let Some(domain) = rx.recv().await {
            self.hp.taken(&domain);
            self.ensure(&domain).await;
        }
    }

    async fn ensure(&mut self, name: &str) {
        let xml = match virsh(&self.uri, &["dumpxml", name]).await {
            Ok(x) => x,
            Err(e) => return debug!(domain = name, error = %e, "hot-plug: no live XML (gone?)"),
        };
        let d = match parse_domain(&xml) {
            Ok(d) => d,
            Err(e) => return warn!(domain = name, error = %e, "hot-plug: unreadable domain XML"),
        };
        let selected = self.selected_by(&d).await;
        let guest = self.shared.ctx.guest_of_instance(&d.uuid);
        match (selected, &d.channel) {
            (Some(_), Some(_)) => debug!(domain = name, "hot-plug: the channel is there"),
            (Some(by), None) if !d.controller => {
                self.refuse(&guest, &d, "no virtio-serial controllers are available".into(), by)
            }
            (Some(by), None) => self.attach(&guest, &d, by).await,
            (None, Some(Some(path)))
                if self.cfg.detach && Path::new(path) == socket_of(&self.cfg.socket_dir, &d.uuid) =>
            {
                self.detach(&guest, &d, path).await
            }
            (None, _) => {}
        }
    }

    async fn selected_by(&mut self, d: &DomainXml) -> Option<&'static str> {
        if self.cfg.domains.iter().any(|p| p.is_match(&d.name)) {
            return Some("domain");
        }
        if self.cfg.metadata && d.vigil == Some(true) {
            return Some("metadata");
        }
        let flavor = d.flavor.as_deref()?;
        if self.cfg.flavors.iter().any(|p| p.is_match(flavor)) {
            return Some("flavor");
        }
        let compute = self.compute.as_mut()?;
        match compute.extra_spec(flavor, &d.uuid).await {
            Ok(true) => Some("extra_spec"),
            Ok(false) => None,
            Err(e) => {
                warn!(domain = %d.name, flavor, error = %e, "hot-plug: the flavor's extra specs are unknown");
                None
            }
        }
    }

    async fn attach(&mut self, guest: &str, d: &DomainXml, by: &'static str) {
        let socket = socket_of(&self.cfg.socket_dir, &d.uuid);
        clear_stale_socket(&socket);
        let started = Instant::now();
        let xml = channel_xml(&socket);
        let result = virsh_with_input(&self.uri, &["attach-device", &d.name, "/dev/stdin", "--live"], Some(&xml)).await;
        match result {
            Ok(_) => {
                info!(domain = %d.name, socket = %socket.display(), selected_by = by, ms = started.elapsed().as_millis() as u64, "channel attached");
                self.refused.remove(&d.name);
                self.report(
                    guest,
                    Event::ChannelAttached {
                        domain: d.name.clone(),
                        socket: socket.display().to_string(),
                        selected_by: by,
                    },
                );
            }
            Err(reason) => self.refuse(guest, d, reason, by),
        }
    }

    fn refuse(&mut self, guest: &str, d: &DomainXml, reason: String, by: &'static str) {
        if self.refused.get(&d.name) == Some(&reason) {
            return;
        }
        warn!(domain = %d.name, selected_by = by, reason = %reason, "channel refused");
        self.refused.insert(d.name.clone(), reason.clone());
        let fix = fix_for(&reason);
        self.report(guest, Event::ChannelRefused { domain: d.name.clone(), reason, fix });
    }

    async fn detach(&mut self, guest: &str, d: &DomainXml, path: &str) {
        let xml = channel_xml(Path::new(path));
        let result = virsh_with_input(&self.uri, &["detach-device", &d.name, "/dev/stdin", "--live"], Some(&xml)).await;
        match result {
            Ok(_) => {
                info!(domain = %d.name, socket = path, "channel detached");
                self.report(guest, Event::ChannelDetached { domain: d.name.clone(), socket: path.to_string() });
            }
            Err(e) => warn!(domain = %d.name, error = %e, "hot-plug: detach failed"),
        }
    }

    fn report(&self, guest: &str, event: Event) {
        if !self.shared.send(Command::Report { guest: guest.to_string(), event }) {
            warn!(guest, "hot-plug event not delivered: the loop's command queue is full");
        }
    }
}

/// A socket file left by an earlier QEMU (nobody listens) would make the new one fail to bind: remove it.
/// Anything else (a live socket, a regular file) is left for libvirt to refuse, with its reason.
fn clear_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// Nova's compute API: the server's flavor with its extra specs (microversion 2.47, where the server embeds its
/// flavor; see Nova's api-samples `servers/v2.47/server-get-resp.json`), by Keystone token when configured.
struct Compute {
    url: String,
    http: reqwest::Client,
    keystone: Option<Keystone>,
    cache: HashMap<String, (bool, Instant)>,
}

impl Compute {
    fn new(c: &ComputeSettings) -> Result<Self, String> {
        let timeout = Duration::from_secs(c.timeout_secs.unwrap_or(10).max(1));
        let mut b = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
        if let Some(ca) = &c.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("hotplug.compute.ca_file {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("ca_file: {e}"))? {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b.build().map_err(|e| format!("http client: {e}"))?;
        let options = KeystoneOptions {
            auth_url: c.auth_url.as_deref(),
            username: c.username.as_deref(),
            password_file: c.password_file.as_deref(),
            user_domain_name: c.user_domain_name.as_deref(),
            project_name: c.project_name.as_deref(),
            project_domain_name: c.project_domain_name.as_deref(),
        };
        let keystone = Keystone::from_options("hotplug.compute", options, http.clone())?;
        Ok(Compute { url: c.url.trim_end_matches('/').to_string(), http, keystone, cache: HashMap::new() })
    }

    /// Whether the flavor of server `uuid` (named `flavor` in Nova's metadata) has `vigil:heartbeat` = true;
    /// asked once per flavor per [`EXTRA_SPEC_TTL`].
    async fn extra_spec(&mut self, flavor: &str, uuid: &str) -> Result<bool, String> {
        if let Some((on, at)) = self.cache.get(flavor) {
            if at.elapsed() < EXTRA_SPEC_TTL {
                return Ok(*on);
            }
        }
        for attempt in 0..2 {
            let mut req = self
                .http
                .get(format!("{}/servers/{uuid}", self.url))
                .header("OpenStack-API-Version", "compute 2.47")
                .header("X-OpenStack-Nova-API-Version", "2.47")
                .header("Accept", "application/json");
            if let Some(k) = self.keystone.as_mut() {
                req = req.header("X-Auth-Token", k.token().await.map_err(|e| e.0)?);
            }
            let resp = req.send().await.map_err(|e| format!("compute API: {}", e.without_url()))?;
            let status = resp.status().as_u16();
            if status == 401 && attempt == 0 {
                if let Some(k) = self.keystone.as_mut() {
                    k.expire();
                    continue;
                }
            }
            if status != 200 {
                return Err(format!("compute API: GET /servers/{uuid}: HTTP {status}"));
            }
            let body: Value = resp.json().await.map_err(|e| format!("compute API: not JSON: {e}"))?;
            let on = extra_spec_of(&body)?;
            self.cache.insert(flavor.to_string(), (on, Instant::now()));
            return Ok(on);
        }
        Err("compute API: unauthorized".into())
    }
}

/// `vigil:heartbeat` of a `GET /servers/{id}` body of microversion 2.47 or later.
pub fn extra_spec_of(body: &Value) -> Result<bool, String> {
    let flavor = &body["server"]["flavor"];
    if !flavor.is_object() {
        return Err("compute API: no server.flavor (a microversion before 2.47?)".into());
    }
    let Some(specs) = flavor.get("extra_specs") else {
        // Nova leaves them out for a caller its policy does not let see them
        return Err(
            "compute API: no server.flavor.extra_specs (policy os_compute_api:servers:show:flavor-extra-specs)".into(),
        );
    };
    Ok(specs.get("vigil:heartbeat").and_then(Value::as_str).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOVA_DOMAIN: &str = r#"<domain type='kvm' id='3'>
  <name>instance-00000001</name>
  <uuid>9168b536-cd40-4630-b43f-b259807c6e87</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:package version="27.0.0"/>
      <nova:name>new-server-test</nova:name>
      <nova:flavor name="m1.hb"><nova:memory>512</nova:memory></nova:flavor>
    </nova:instance>
  </metadata>
  <devices>
    <controller type='virtio-serial' index='0'/>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-instance-00000001/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
    </channel>
  </devices>
</domain>"#;

    #[test]
    fn a_nova_domain_is_read_for_its_flavor_its_controller_and_the_absence_of_our_channel() {
        let d = parse_domain(NOVA_DOMAIN).unwrap();
        assert_eq!(d.name, "instance-00000001");
        assert_eq!(d.uuid, "9168b536-cd40-4630-b43f-b259807c6e87");
        assert_eq!(d.flavor.as_deref(), Some("m1.hb"));
        assert!(d.controller);
        assert_eq!(d.channel, None, "the guest agent's channel is not ours");
        assert_eq!(d.vigil, None);
    }

    #[test]
    fn our_channel_and_our_metadata_are_found() {
        let xml = NOVA_DOMAIN
            .replace("</devices>", &format!("{}</devices>", channel_xml(Path::new("/run/v/cgcs.heartbeat.x.sock"))));
        let xml =
            xml.replace("</metadata>", &format!("<v:heartbeat xmlns:v='{VIGIL_XMLNS}' enabled='Yes'/></metadata>"));
        let d = parse_domain(&xml).unwrap();
        assert_eq!(d.channel, Some(Some("/run/v/cgcs.heartbeat.x.sock".to_string())));
        assert_eq!(d.vigil, Some(true));
        // an element of that name in another namespace is not ours
        let other = NOVA_DOMAIN.replace("</metadata>", "<v:heartbeat xmlns:v='urn:other' enabled='yes'/></metadata>");
        assert_eq!(parse_domain(&other).unwrap().vigil, None);
        assert!(parse_domain("<domain><name>x</name></domain>").is_err(), "no uuid");
        assert!(parse_domain("<notadomain/>").is_err());
        assert!(parse_domain("<domain><name>x</name><uuid>u</uuid></domain").is_err(), "malformed");
    }

    #[test]
    fn the_channel_xml_escapes_its_path_and_names_the_channel() {
        let x = channel_xml(Path::new("/a'b&c/s.sock"));
        assert!(x.contains("path='/a&apos;b&amp;c/s.sock'") && x.contains("name='cgcs.heartbeat'"), "{x}");
        let d = parse_domain(&format!("<domain><name>n</name><uuid>u</uuid><devices>{x}</devices></domain>")).unwrap();
        assert_eq!(d.channel, Some(Some("/a'b&c/s.sock".to_string())));
    }

    #[test]
    fn the_extra_spec_is_read_from_novas_2_47_server_shape() {
        // the shape of Nova's api-samples servers/v2.47/server-get-resp.json
        let mut body = serde_json::json!({"server": {"id": "9168b536-cd40-4630-b43f-b259807c6e87", "flavor": {
            "disk": 1, "ephemeral": 0, "extra_specs": {"hw:numa_nodes": "1"}, "original_name": "m1.tiny.specs",
            "ram": 512, "swap": 0, "vcpus": 1}}});
        assert_eq!(extra_spec_of(&body), Ok(false));
        body["server"]["flavor"]["extra_specs"]["vigil:heartbeat"] = "True".into();
        assert_eq!(extra_spec_of(&body), Ok(true));
        body["server"]["flavor"].as_object_mut().unwrap().remove("extra_specs");
        assert!(extra_spec_of(&body).unwrap_err().contains("policy"));
        assert!(extra_spec_of(&serde_json::json!({"server": {"flavor": {"id": "1", "links": []}}})).is_err());
    }

    #[test]
    fn a_refusal_names_its_fix() {
        assert_eq!(fix_for("no virtio-serial controllers are available"), CONTROLLER_FIX);
        assert!(fix_for("Unable to bind: Permission denied").contains("write access"));
    }
}
