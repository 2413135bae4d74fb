//! Image builds end to end from Debian packages.
//!
//! These download the 6.12 cloud kernel (about 35 MB) and busybox-static
//! once into `<target>/vfrig-test-cache`, shared between runs; each test
//! builds its images from a fake agent with fresh contents, so the image
//! itself is built anew every run, and removes it afterwards.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use vfrig_images::{
    build_guest_binary, ensure_static, Builder, Error, Flavour, Image, ImageSpec, KernelSource,
    Manifest,
};

/// The download cache shared by test runs.
fn cache_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("vfrig-test-cache")
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "vfrig-images-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fake agent no other run has built an image from. The builder must
/// only copy it: it is a script, not a static executable.
fn fake_agent(dir: &Scratch) -> (PathBuf, Vec<u8>) {
    let path = dir.0.join("vfrig-agent");
    let data = format!(
        "#!/bin/sh\n# fake agent {:?}\n",
        (std::process::id(), SystemTime::now())
    )
    .into_bytes();
    std::fs::write(&path, &data).expect("fake agent written");
    (path, data)
}

/// A builder on the shared cache that records its progress steps.
fn builder() -> (Builder, Arc<Mutex<Vec<String>>>) {
    let steps = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&steps);
    let builder = Builder::new(cache_root()).progress(move |step| {
        sink.lock().expect("not poisoned").push(step.to_owned());
    });
    (builder, steps)
}

fn take(steps: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *steps.lock().expect("not poisoned"))
}

/// Removes a built image's directory at the end of a test.
struct RemoveImage(PathBuf);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// One archive entry: mode, (rdev major, minor), data.
type Node = (u32, (u32, u32), Vec<u8>);

/// An initramfs read back with the cpio crate.
struct Archive {
    entries: BTreeMap<String, Node>,
    order: Vec<String>,
}

impl Archive {
    fn read(path: &Path) -> Self {
        let gz = std::fs::read(path).expect("initramfs readable");
        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut cpio)
            .expect("valid gzip");
        let mut entries = BTreeMap::new();
        let mut order = Vec::new();
        let mut rest = &cpio[..];
        loop {
            let mut reader = cpio::newc::Reader::new(rest).expect("a newc entry");
            let entry = reader.entry();
            if entry.is_trailer() {
                break;
            }
            let name = entry.name().to_owned();
            let meta = (entry.mode(), (entry.rdev_major(), entry.rdev_minor()));
            let mut data = Vec::new();
            reader.read_to_end(&mut data).expect("entry data");
            order.push(name.clone());
            entries.insert(name, (meta.0, meta.1, data));
            rest = reader.finish().expect("next entry");
        }
        Self { entries, order }
    }

    /// The archive path `path` leads to, following links like the kernel.
    fn resolve(&self, path: &str) -> Option<String> {
        let mut todo: VecDeque<String> = split(path);
        let mut at: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = todo.pop_front() {
            if part == ".." {
                at.pop();
                continue;
            }
            at.push(part);
            let (mode, _, data) = self.entries.get(&at.join("/"))?;
            if mode & S_IFMT == S_IFLNK {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = String::from_utf8(data.clone()).ok()?;
                at.pop();
                if target.starts_with('/') {
                    at.clear();
                }
                let mut next = split(&target);
                next.extend(todo.drain(..));
                todo = next;
            }
        }
        Some(at.join("/"))
    }

    /// The contents of the regular file `path` leads to.
    fn file(&self, path: &str) -> &[u8] {
        let real = self
            .resolve(path)
            .unwrap_or_else(|| panic!("{path} does not resolve"));
        let (mode, _, data) = &self.entries[&real];
        assert_eq!(
            mode & S_IFMT,
            S_IFREG,
            "{path} → {real} is not a regular file"
        );
        data
    }

    fn link(&self, path: &str) -> Option<&str> {
        let (mode, _, data) = self.entries.get(path)?;
        (mode & S_IFMT == S_IFLNK).then(|| std::str::from_utf8(data).expect("UTF-8 target"))
    }
}

fn split(path: &str) -> VecDeque<String> {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_owned)
        .collect()
}

fn position(manifest: &Manifest, name: &str) -> usize {
    manifest
        .modules
        .iter()
        .position(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the image"))
}

/// What every full image must hold: modules in the archive and in the list,
/// the agent as /init, the inner manifest.
fn check_common(image: &Image, archive: &Archive, agent: &[u8]) {
    let manifest = &image.manifest;
    let mut list = String::new();
    for module in &manifest.modules {
        let data = archive.file(&module.path_in_image);
        assert!(
            data.starts_with(b"\x7fELF"),
            "{} is decompressed",
            module.path_in_image
        );
        list.push_str(&module.path_in_image);
        if !module.depends.is_empty() {
            list.push(' ');
            list.push_str(&module.depends.join(","));
        }
        list.push('\n');
    }
    assert_eq!(archive.file("/etc/vfrig/modules"), list.as_bytes());
    assert_eq!(
        archive.resolve("/init").as_deref(),
        Some("usr/bin/vfrig-agent")
    );
    assert_eq!(archive.file("/init"), agent);
    assert_eq!(archive.entries["usr/bin/vfrig-agent"].0, S_IFREG | 0o755);

    let inner: Manifest =
        serde_json::from_slice(archive.file("/etc/vfrig/manifest.json")).expect("inner manifest");
    assert_eq!(
        inner.initramfs_bytes, 0,
        "the copy inside cannot know its size"
    );
    assert_eq!(
        Manifest {
            initramfs_bytes: manifest.initramfs_bytes,
            ..inner
        },
        *manifest
    );
    assert_eq!(manifest.files, archive.order.len());
    assert_eq!(
        manifest.initramfs_bytes,
        std::fs::metadata(&image.initramfs)
            .expect("initramfs")
            .len()
    );
    let on_disk: Manifest = serde_json::from_slice(
        &std::fs::read(image.dir.join("manifest.json")).expect("manifest.json"),
    )
    .expect("valid manifest.json");
    assert_eq!(on_disk, *manifest);
}

#[test]
#[allow(clippy::print_stderr)]
fn cloud_image_builds_from_debian_packages_then_is_a_cache_hit() {
    let scratch = Scratch::new("cloud");
    let (agent, agent_data) = fake_agent(&scratch);
    let (builder, steps) = builder();
    let spec = ImageSpec::new(Flavour::Cloud).with_binary("vfrig-agent", &agent);

    let started = Instant::now();
    let image = builder.build(&spec).expect("cloud image builds");
    let cold = started.elapsed();
    let _cleanup = RemoveImage(image.dir.clone());
    assert!(!image.cache_hit, "a fresh agent makes a fresh image");
    let built = take(&steps);
    assert!(
        built.contains(&"modules: 11 (closure of 6)".to_owned()),
        "{built:?}"
    );
    assert!(built.contains(&"writing initramfs".to_owned()), "{built:?}");

    let manifest = &image.manifest;
    let kernel = &manifest.kernel;
    let release = kernel.release.as_str();
    assert!(
        release.starts_with("6.12.") && release.ends_with("+deb12-cloud-amd64"),
        "{release}"
    );
    assert_eq!(kernel.source, KernelSource::Debian);
    assert_eq!(
        kernel.package.as_deref(),
        Some(format!("linux-image-{release}").as_str())
    );
    assert!(kernel
        .version
        .as_deref()
        .is_some_and(|v| v.starts_with("6.12.")));

    // Dependencies first; virtio_pci is built in and not listed.
    let at = |name| position(manifest, name);
    assert!(at("tls") < at("bonding"));
    for dep in ["garp", "mrp", "stp", "llc"] {
        assert!(at(dep) < at("8021q"), "{dep} loads before 8021q");
    }
    assert!(at("llc") < at("stp") && at("stp") < at("garp"));
    assert!(at("failover") < at("net_failover") && at("net_failover") < at("virtio_net"));
    assert_eq!(manifest.modules.len(), 11);
    assert!(manifest.module("virtio_pci").is_none());
    assert_eq!(manifest.module("8021q").map(|m| m.depends.len()), Some(2));
    for module in &manifest.modules {
        assert!(
            module
                .path_in_image
                .starts_with(&format!("/lib/modules/{release}/kernel/")),
            "{}",
            module.path_in_image
        );
        assert!(module.path_in_image.ends_with(".ko"));
    }

    let archive = Archive::read(&image.initramfs);
    check_common(&image, &archive, &agent_data);

    // iproute2's ip, its libraries and the loader, as the host has them.
    let host_ip = std::fs::read("/usr/sbin/ip").expect("iproute2 on the host");
    assert_eq!(archive.file("/usr/sbin/ip"), host_ip);
    assert_eq!(archive.file("/sbin/ip"), host_ip);
    assert_eq!(archive.resolve("/bin/ip"), None, "no busybox ip");
    assert!(!archive.entries.contains_key("usr/bin/ip"));
    let ldd = std::process::Command::new("ldd")
        .arg("/usr/sbin/ip")
        .output()
        .expect("ldd runs");
    let ldd = String::from_utf8(ldd.stdout).expect("UTF-8");
    let libraries: Vec<&str> = ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .collect();
    assert!(libraries.len() >= 3, "{ldd}");
    for library in libraries {
        let host = std::fs::read(library).expect("host library");
        assert_eq!(archive.file(library), host, "{library}");
    }
    assert!(archive
        .file("/lib64/ld-linux-x86-64.so.2")
        .starts_with(b"\x7fELF"));
    assert!(archive
        .file("/lib/x86_64-linux-gnu/libc.so.6")
        .starts_with(b"\x7fELF"));
    assert_eq!(
        archive.file("/usr/lib/x86_64-linux-gnu/libc.so.6"),
        archive.file("/lib/x86_64-linux-gnu/libc.so.6"),
        "/lib is /usr/lib"
    );

    // dash is /bin/sh; busybox provides the rest, but not ip or sh.
    let dash = std::fs::read("/usr/bin/dash").expect("dash on the host");
    assert_eq!(archive.file("/bin/sh"), dash);
    assert!(archive.file("/bin/busybox").starts_with(b"\x7fELF"));
    for applet in ["/bin/ls", "/sbin/insmod", "/bin/ash", "/usr/bin/env"] {
        assert_eq!(
            archive.resolve(applet).as_deref(),
            Some("usr/bin/busybox"),
            "{applet}"
        );
    }
    let busybox_links: Vec<&String> = archive
        .order
        .iter()
        .filter(|p| archive.link(p) == Some("/bin/busybox"))
        .collect();
    assert!(busybox_links.len() > 200, "{}", busybox_links.len());
    for link in busybox_links {
        assert!(!link.ends_with("/ip") && !link.ends_with("/sh"), "{link}");
    }
    let profile = String::from_utf8(archive.file("/etc/profile").to_vec()).expect("UTF-8");
    assert!(profile.contains("alias ip=/usr/sbin/ip"), "{profile}");
    assert!(profile.contains("PS1='vfrig# '"), "{profile}");

    // The nodes and directories an init needs.
    assert_eq!(archive.entries["dev/console"].0 & S_IFMT, S_IFCHR);
    assert_eq!(archive.entries["dev/console"].1, (5, 1));
    assert_eq!(archive.entries["dev/null"].1, (1, 3));
    for dir in ["proc", "sys", "run", "tmp", "root", "etc", "mnt", "var/tmp"] {
        assert_eq!(archive.entries[dir].0 & S_IFMT, 0o040000, "{dir}");
    }
    for package in ["busybox-static", "dash", "iproute2", "libc6"] {
        assert!(
            manifest.package(package).is_some(),
            "{package}: {:?}",
            manifest.packages
        );
    }
    assert_eq!(manifest.binaries.len(), 1);

    // Unchanged inputs: a cache hit that does nothing else.
    let started = Instant::now();
    let again = builder.build(&spec).expect("cached image");
    let hit = started.elapsed();
    assert!(again.cache_hit);
    assert_eq!(take(&steps), [format!("cache hit {}", manifest.key)]);
    assert_eq!(again.manifest, *manifest);
    assert_eq!(again.initramfs, image.initramfs);
    eprintln!(
        "cloud image: built in {:.2} s, cache hit in {:.3} s, {} bytes",
        cold.as_secs_f64(),
        hit.as_secs_f64(),
        manifest.initramfs_bytes
    );

    // The same inputs give the same bytes.
    let first = std::fs::read(&image.initramfs).expect("initramfs");
    std::fs::remove_dir_all(&image.dir).expect("image removed");
    let rebuilt = builder.build(&spec).expect("rebuilt");
    assert!(!rebuilt.cache_hit);
    assert_eq!(std::fs::read(&rebuilt.initramfs).expect("initramfs"), first);

    // Any change of input is another key.
    assert_eq!(builder.key(&spec).expect("key"), manifest.key);
    let mut fewer = spec.clone();
    fewer.modules_wanted.retain(|m| m != "bonding");
    let changed_agent = scratch.0.join("other");
    std::fs::write(&changed_agent, [&agent_data[..], b"#\n"].concat()).expect("written");
    let changed = ImageSpec::new(Flavour::Cloud).with_binary("vfrig-agent", &changed_agent);
    let extra = spec.clone().with_binary("extra", &agent);
    // Resolving the generic kernel asks apt-cache but downloads nothing.
    let generic = ImageSpec {
        flavour: Flavour::Generic,
        ..spec.clone()
    };
    for other in [fewer, changed, extra, generic] {
        assert_ne!(builder.key(&other).expect("key"), manifest.key, "{other:?}");
    }
}

#[test]
fn custom_kernel_release_comes_from_its_header_and_modules_from_its_tree() {
    let scratch = Scratch::new("custom");
    let (agent, agent_data) = fake_agent(&scratch);
    let (builder, steps) = builder();
    let debian = builder
        .debian_kernel(Flavour::Cloud)
        .expect("Debian kernel unpacked");
    // A copy, as a self-built bzImage would be.
    let bzimage = scratch.0.join("bzImage");
    std::fs::copy(&debian.vmlinuz, &bzimage).expect("copied");
    // The parent lib/modules directory: the builder descends into <release>.
    let lib_modules = debian.modules_dir.parent().expect("lib/modules").to_owned();

    let mut spec = ImageSpec::new(Flavour::Cloud)
        .with_kernel(&bzimage, Some(lib_modules))
        .with_binary("vfrig-agent", &agent);
    spec.modules_wanted = vec!["bonding".into(), "net-failover".into()];
    take(&steps);
    let image = builder.build(&spec).expect("custom image builds");
    let _cleanup = RemoveImage(image.dir.clone());
    let kernel = &image.manifest.kernel;
    assert_eq!(kernel.release, debian.release);
    assert_eq!(kernel.source, KernelSource::Custom);
    assert_eq!(kernel.path.as_deref(), Some(bzimage.as_path()));
    assert_eq!(kernel.package, None);
    let names: Vec<&str> = image
        .manifest
        .modules
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["tls", "bonding", "failover", "net_failover"]);
    assert!(image.manifest.modules[0]
        .path_in_image
        .starts_with(&format!("/lib/modules/{}/kernel/", debian.release)));
    assert_eq!(
        std::fs::read(&image.kernel).expect("kernel"),
        std::fs::read(&bzimage).expect("bzImage")
    );
    let archive = Archive::read(&image.initramfs);
    check_common(&image, &archive, &agent_data);
    assert!(take(&steps).contains(&"modules: 4 (closure of 2)".to_owned()));

    // Without a module directory the image has no modules, and says so.
    let bare_kernel = ImageSpec::new(Flavour::Cloud)
        .with_kernel(&bzimage, None)
        .with_binary("vfrig-agent", &agent);
    let image = builder
        .build(&bare_kernel)
        .expect("custom image without modules");
    let _cleanup = RemoveImage(image.dir.clone());
    assert!(image.manifest.modules.is_empty());
    assert_eq!(
        Archive::read(&image.initramfs).file("/etc/vfrig/modules"),
        b""
    );
    assert!(take(&steps)
        .iter()
        .any(|s| s.contains("the agent loads none")));

    // A file that is not a bzImage.
    let spec = ImageSpec::new(Flavour::Cloud)
        .with_kernel(&agent, None)
        .with_binary("vfrig-agent", &agent);
    let err = builder.build(&spec).expect_err("not a kernel");
    assert!(matches!(err, Error::NotABzImage { .. }), "{err}");
}

#[test]
fn modules_missing_from_the_flavour_are_named_with_what_to_do() {
    let scratch = Scratch::new("missing");
    let (agent, _) = fake_agent(&scratch);
    let (builder, _) = builder();
    let mut spec = ImageSpec::new(Flavour::Cloud).with_binary("vfrig-agent", &agent);
    spec.modules_wanted.push("e1000e".into());
    let err = builder.build(&spec).expect_err("cloud has no e1000e");
    let text = err.to_string();
    assert!(
        matches!(err, Error::ModuleNotFound { ref module, needed_by: None, .. } if module == "e1000e")
    );
    assert!(text.contains("(cloud flavour)"), "{text}");
    assert!(text.contains("use the generic flavour"), "{text}");

    let no_agent = ImageSpec::new(Flavour::Cloud);
    let err = builder.build(&no_agent).expect_err("no /init");
    assert!(
        err.to_string()
            .contains("no guest binary named `vfrig-agent`"),
        "{err}"
    );
}

/// The release a module was built for: the first word of its `vermagic=`.
fn vermagic_release(ko: &[u8]) -> String {
    let at = ko
        .windows(b"vermagic=".len())
        .position(|w| w == b"vermagic=")
        .expect("a vermagic field")
        + b"vermagic=".len();
    let end = ko[at..].iter().position(|b| *b == 0).expect("terminated") + at;
    let text = std::str::from_utf8(&ko[at..end]).expect("UTF-8");
    text.split_whitespace()
        .next()
        .expect("a release")
        .to_owned()
}

/// Needs `linux-headers-<release>` and `linux-source-6.12` on the host: as
/// root the builder installs them (about 40 s, once); otherwise this fails
/// with the apt-get command to run. The mutant itself is built once per
/// cache (about 30 s) and then found there.
#[test]
#[allow(clippy::print_stderr)]
fn cloud_image_with_a_mutant_carries_it_in_place_of_the_stock_module() {
    const MUTANT: &str = "bond-rr-count-zero";
    let scratch = Scratch::new("mutant");
    let (agent, agent_data) = fake_agent(&scratch);
    let (builder, steps) = builder();
    let plain = ImageSpec::new(Flavour::Cloud).with_binary("vfrig-agent", &agent);
    let spec = plain.clone().with_mutant(MUTANT);

    let started = Instant::now();
    let image = builder.build(&spec).expect("image with a mutant builds");
    let cold = started.elapsed();
    let _cleanup = RemoveImage(image.dir.clone());
    let manifest = &image.manifest;
    let kernel = &manifest.kernel;
    let mutant = manifest
        .mutant(MUTANT)
        .expect("the manifest records the mutant");
    assert_eq!(mutant.module, "bonding");
    assert_eq!(mutant.release, kernel.release);
    assert_eq!(
        Some(mutant.source_version.as_str()),
        kernel.version.as_deref()
    );
    assert_eq!(manifest.mutants.len(), 1);
    assert_ne!(builder.key(&plain).expect("key"), manifest.key);

    // In the stock module's place, with its own dependencies.
    let bonding = manifest.module("bonding").expect("bonding is loaded");
    assert_eq!(bonding.mutant.as_deref(), Some(MUTANT));
    assert_eq!(bonding.depends, ["tls"]);
    assert_eq!(
        bonding.path_in_image,
        format!(
            "/lib/modules/{}/kernel/drivers/net/bonding/bonding.ko",
            kernel.release
        )
    );
    assert!(position(manifest, "tls") < position(manifest, "bonding"));
    assert!(manifest
        .modules
        .iter()
        .all(|m| m.name == "bonding" || m.mutant.is_none()));
    assert_eq!(manifest.modules.len(), 11);
    let archive = Archive::read(&image.initramfs);
    check_common(&image, &archive, &agent_data);
    let bonding_files: Vec<&String> = archive
        .order
        .iter()
        .filter(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("bonding.ko"))
        })
        .collect();
    assert_eq!(bonding_files.len(), 1, "{bonding_files:?}");

    // The very file the mutant build made, for the image's kernel.
    take(&steps);
    let built = builder
        .build_mutant(MUTANT, &kernel.release, &mutant.source_version)
        .expect("cached mutant");
    assert!(built.cache_hit);
    assert_eq!(
        take(&steps),
        [format!("mutant {MUTANT}: cache hit {}", mutant.key)]
    );
    assert_eq!(built.info, *mutant);
    let ko = std::fs::read(&built.ko).expect("mutant module");
    assert_eq!(archive.file(&bonding.path_in_image), ko);
    assert_eq!(vermagic_release(&ko), kernel.release);

    // Its source lacks the guard in round-robin slave selection.
    let source = std::fs::read_to_string(built.source.join("bond_main.c")).expect("patched source");
    let start = source
        .find("static struct slave *bond_xmit_roundrobin_slave_get(")
        .expect("the function");
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").expect("its end")];
    assert!(
        body.contains("slave_id = bond_rr_gen_slave_id(bond) % slave_cnt;"),
        "{body}"
    );
    assert!(!body.contains("if (likely(slave_cnt))"), "{body}");

    let started = Instant::now();
    let again = builder.build(&spec).expect("cached image");
    assert!(again.cache_hit);
    assert_eq!(take(&steps), [format!("cache hit {}", manifest.key)]);
    eprintln!(
        "cloud image with mutant {MUTANT}: built in {:.2} s, cache hit in {:.3} s",
        cold.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let err = builder
        .build_mutant("no-such-mutant", &kernel.release, &mutant.source_version)
        .expect_err("unknown");
    assert!(
        err.to_string()
            .contains("known mutants: bond-rr-count-zero"),
        "{err}"
    );
}

#[test]
fn bare_image_is_busybox_and_an_init_that_powers_off() {
    let (builder, steps) = builder();
    let spec = ImageSpec::new(Flavour::Cloud);
    let image = builder.bare(&spec).expect("bare image");
    let archive = Archive::read(&image.initramfs);
    assert_eq!(
        archive.file("/init"),
        b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n"
    );
    assert_eq!(archive.entries["init"].0, S_IFREG | 0o755);
    assert!(archive.file("/bin/busybox").starts_with(b"\x7fELF"));
    assert_eq!(archive.entries["dev/console"].1, (5, 1));
    assert!(image.manifest.modules.is_empty());
    assert_eq!(image.manifest.files, archive.order.len());
    assert!(image.manifest.package("busybox-static").is_some());
    assert!(!archive.entries.keys().any(|p| p.contains("modules")));
    take(&steps);
    let again = builder.bare(&spec).expect("cached");
    assert!(again.cache_hit);
    assert_eq!(again.manifest, image.manifest);
    assert_eq!(take(&steps), [format!("cache hit {}", image.manifest.key)]);
}

#[test]
fn guest_binaries_are_built_static_and_failures_say_what_to_do() {
    let scratch = Scratch::new("guest");
    let project = scratch.0.join("hello");
    std::fs::create_dir_all(project.join("src")).expect("project");
    std::fs::write(
        project.join("Cargo.toml"),
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .expect("manifest");
    std::fs::write(
        project.join("src/main.rs"),
        "fn main() { println!(\"hello from the guest\"); }\n",
    )
    .expect("main");
    let steps = Mutex::new(Vec::new());
    let progress = |step: &str| steps.lock().expect("not poisoned").push(step.to_owned());
    let target = scratch.0.join("target");
    let bin = build_guest_binary(&project, "hello", "hello", &target, progress).expect("builds");
    assert_eq!(bin, target.join("x86_64-unknown-linux-gnu/release/hello"));
    ensure_static(&bin).expect("static");
    let out = std::process::Command::new(&bin).output().expect("runs");
    assert_eq!(out.stdout, b"hello from the guest\n");
    assert!(steps.lock().expect("not poisoned")[0].contains("+crt-static"));

    let err =
        build_guest_binary(&project, "nope", "nope", &target, |_| {}).expect_err("no package");
    let text = err.to_string();
    assert!(text.contains("cargo build --release -p nope"), "{text}");
    assert!(
        text.contains("rustup target add x86_64-unknown-linux-gnu"),
        "{text}"
    );
}
