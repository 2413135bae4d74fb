//! Kernel modules: find them in a tree, read their `.modinfo`, and order the
//! closure of the wanted ones so each loads after its dependencies.
//!
//! Debian's packages ship no `modules.dep`, so dependencies come from each
//! module's own `.modinfo` section (NUL-separated `key=value` strings, with
//! `depends=` a comma list). Module names treat `-` and `_` alike, as the
//! kernel does; this module always speaks of them with `_`.
//!
//! [`load_order`] is pure: it asks a [`ModuleSource`] about one module at a
//! time, so tests drive it with a map and the builder with a [`TreeLoader`]
//! that reads (and decompresses) files on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection};

use crate::{Error, Result};

/// How a module file is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// `.ko`
    None,
    /// `.ko.xz`
    Xz,
    /// `.ko.gz`
    Gzip,
    /// `.ko.zst`
    Zstd,
}

impl Compression {
    const ALL: [(&'static str, Compression); 4] = [
        (".ko", Compression::None),
        (".ko.xz", Compression::Xz),
        (".ko.gz", Compression::Gzip),
        (".ko.zst", Compression::Zstd),
    ];
}

/// The kernel's spelling of a module name: `-` becomes `_`.
pub(crate) fn normalise(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// The module name and compression of a file name such as `8021q.ko.xz`.
pub(crate) fn split_file_name(file_name: &str) -> Option<(String, Compression)> {
    Compression::ALL.iter().find_map(|(suffix, compression)| {
        let stem = file_name.strip_suffix(suffix)?;
        (!stem.is_empty()).then(|| (normalise(stem), *compression))
    })
}

/// What a module's `.modinfo` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ModInfo {
    /// `name=`, if present (kernels since 5.x write it).
    pub(crate) name: Option<String>,
    /// `depends=`, normalised, in the order listed.
    pub(crate) depends: Vec<String>,
    /// `vermagic=`: the release first, then build options.
    pub(crate) vermagic: Option<String>,
}

/// Reads the `.modinfo` section of an (uncompressed) module.
pub(crate) fn parse_modinfo(elf: &[u8]) -> std::result::Result<ModInfo, String> {
    let file = ElfFile64::<Endianness>::parse(elf).map_err(|e| format!("not a 64-bit ELF: {e}"))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or("it has no .modinfo section")?;
    let data = section
        .data()
        .map_err(|e| format!("its .modinfo section is unreadable: {e}"))?;
    let mut info = ModInfo::default();
    for field in data.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        match field.split_once('=') {
            Some(("name", value)) => info.name = Some(normalise(value)),
            Some(("depends", value)) => {
                info.depends = value
                    .split(',')
                    .map(normalise)
                    .filter(|d| !d.is_empty())
                    .collect();
            }
            Some(("vermagic", value)) => info.vermagic = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    Ok(info)
}

/// Decompresses a module file's contents.
pub(crate) fn decompress(path: &Path, data: Vec<u8>, compression: Compression) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::BadModule {
        path: path.to_owned(),
        reason,
    };
    match compression {
        Compression::None => Ok(data),
        Compression::Xz => {
            let mut out = Vec::with_capacity(data.len() * 4);
            lzma_rs::xz_decompress(&mut &data[..], &mut out)
                .map_err(|e| bad(format!("bad xz data: {e}")))?;
            Ok(out)
        }
        Compression::Gzip => {
            let mut out = Vec::with_capacity(data.len() * 4);
            flate2::read::GzDecoder::new(&data[..])
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("bad gzip data: {e}")))?;
            Ok(out)
        }
        Compression::Zstd => Err(Error::UnsupportedCompression {
            path: path.to_owned(),
            format: "zstd",
        }),
    }
}

/// The module files under a directory, by name, and the names listed as
/// built in.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModuleTree {
    /// The directory searched.
    pub(crate) root: PathBuf,
    /// Module name → path relative to `root`, with its compression.
    pub(crate) files: BTreeMap<String, (PathBuf, Compression)>,
    /// Names from `root/modules.builtin`, if that file exists.
    pub(crate) builtin: BTreeSet<String>,
}

impl ModuleTree {
    /// Indexes every `*.ko`, `*.ko.xz`, `*.ko.gz` and `*.ko.zst` under
    /// `root` (recursively, skipping hidden directories and not following
    /// symlinked ones, which in a `lib/modules/<release>` tree point at
    /// kernel sources). When a name
    /// appears twice, a file under `updates/` wins (as with depmod), then
    /// the first path in sorted order.
    pub(crate) fn scan(root: &Path) -> Result<Self> {
        let mut found: Vec<(PathBuf, String, Compression)> = Vec::new();
        let mut dirs = vec![PathBuf::new()];
        while let Some(rel) = dirs.pop() {
            let dir = root.join(&rel);
            let entries = std::fs::read_dir(&dir).map_err(Error::io("list", &dir))?;
            for entry in entries {
                let entry = entry.map_err(Error::io("list", &dir))?;
                let kind = entry
                    .file_type()
                    .map_err(Error::io("inspect", entry.path()))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if kind.is_dir() {
                    // Skip .git, .tmp_versions and the like in build trees.
                    if !name.starts_with('.') {
                        dirs.push(rel.join(name));
                    }
                } else if let Some((module, compression)) = split_file_name(name) {
                    found.push((rel.join(name), module, compression));
                }
            }
        }
        found.sort_by(|a, b| {
            let updates = |p: &Path| !p.starts_with("updates");
            (updates(&a.0), &a.0).cmp(&(updates(&b.0), &b.0))
        });
        let mut files = BTreeMap::new();
        for (rel, module, compression) in found {
            if let Some((kept, _)) = files.get(&module) {
                tracing::debug!(module, kept = ?kept, ignored = ?rel, "module found twice");
                continue;
            }
            files.insert(module, (rel, compression));
        }
        let builtin_file = root.join("modules.builtin");
        let builtin = match std::fs::read_to_string(&builtin_file) {
            Ok(text) => parse_builtin(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(Error::io("read", builtin_file)(e)),
        };
        Ok(Self {
            root: root.to_owned(),
            files,
            builtin,
        })
    }
}

/// Module names from a `modules.builtin` file (`kernel/drivers/x/y.ko` lines).
pub(crate) fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.trim().rsplit('/').next())
        .filter_map(split_file_name)
        .map(|(name, _)| name)
        .collect()
}

/// What a [`ModuleSource`] knows about one module name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A loadable module with these dependencies.
    Module(Vec<String>),
    /// Compiled into the kernel: nothing to load.
    Builtin,
    /// Neither.
    Missing,
}

/// Answers [`load_order`]'s questions.
pub(crate) trait ModuleSource {
    /// What `name` is. `Err` only for a real failure (an unreadable file).
    fn lookup(&mut self, name: &str) -> Result<Lookup>;
}

/// Why no load order could be made.
#[derive(Debug)]
pub(crate) enum OrderError {
    /// A module does not exist.
    Missing {
        /// Its name.
        module: String,
        /// The module that needs it; `None` if it was wanted directly.
        needed_by: Option<String>,
    },
    /// Dependencies loop: the names on the loop, the first repeated last.
    Cycle(Vec<String>),
    /// The source failed.
    Source(Error),
}

/// The closure of `wanted` in load order: every module after all of its
/// dependencies. Deterministic: wanted modules are taken in the order given
/// and each one's dependencies in sorted order, depth first. Built-in
/// modules are left out; [`Lookup::Builtin`] for a wanted module is not an
/// error.
pub(crate) fn load_order(
    wanted: &[String],
    source: &mut impl ModuleSource,
) -> std::result::Result<Vec<String>, OrderError> {
    struct Walk<'s, S> {
        source: &'s mut S,
        done: BTreeSet<String>,
        stack: Vec<String>,
        order: Vec<String>,
    }
    impl<S: ModuleSource> Walk<'_, S> {
        fn visit(
            &mut self,
            name: &str,
            needed_by: Option<&str>,
        ) -> std::result::Result<(), OrderError> {
            if self.done.contains(name) {
                return Ok(());
            }
            if let Some(at) = self.stack.iter().position(|m| m == name) {
                let mut cycle = self.stack[at..].to_vec();
                cycle.push(name.to_owned());
                return Err(OrderError::Cycle(cycle));
            }
            match self.source.lookup(name).map_err(OrderError::Source)? {
                Lookup::Missing => Err(OrderError::Missing {
                    module: name.to_owned(),
                    needed_by: needed_by.map(str::to_owned),
                }),
                Lookup::Builtin => {
                    self.done.insert(name.to_owned());
                    Ok(())
                }
                Lookup::Module(depends) => {
                    let depends: BTreeSet<String> = depends.iter().map(|d| normalise(d)).collect();
                    self.stack.push(name.to_owned());
                    for dep in &depends {
                        self.visit(dep, Some(name))?;
                    }
                    self.stack.pop();
                    self.done.insert(name.to_owned());
                    self.order.push(name.to_owned());
                    Ok(())
                }
            }
        }
    }
    let mut walk = Walk {
        source,
        done: BTreeSet::new(),
        stack: Vec::new(),
        order: Vec::new(),
    };
    for name in wanted {
        walk.visit(&normalise(name), None)?;
    }
    Ok(walk.order)
}

/// A module read from a tree, decompressed.
#[derive(Debug, Clone)]
pub(crate) struct LoadedModule {
    /// Its path relative to the tree's root, without the compression suffix.
    pub(crate) rel: PathBuf,
    /// The file it was read from.
    pub(crate) path: PathBuf,
    /// The uncompressed `.ko`.
    pub(crate) data: Vec<u8>,
    /// Its `.modinfo`.
    pub(crate) info: ModInfo,
}

/// A [`ModuleSource`] over a [`ModuleTree`] that reads each module it is
/// asked about once and keeps it. Overrides (kernel mutants) take the
/// place of the tree's module of the same name: their own `.modinfo` gives
/// the dependencies, and they keep the stock file's path (so nothing that
/// loads the module by path can reach the stock one).
#[derive(Debug)]
pub(crate) struct TreeLoader<'t> {
    tree: &'t ModuleTree,
    /// Module name → a module file to use instead of the tree's.
    overrides: BTreeMap<String, PathBuf>,
    /// Modules read so far, by name.
    pub(crate) loaded: BTreeMap<String, LoadedModule>,
}

impl<'t> TreeLoader<'t> {
    pub(crate) fn new(tree: &'t ModuleTree) -> Self {
        Self {
            tree,
            overrides: BTreeMap::new(),
            loaded: BTreeMap::new(),
        }
    }

    /// Uses the module file `path` for `name` instead of the tree's.
    pub(crate) fn with_override(mut self, name: &str, path: PathBuf) -> Self {
        self.overrides.insert(normalise(name), path);
        self
    }

    /// Reads an override: a module file outside the tree. It keeps the
    /// stock module's path in the tree (without compression suffix), or
    /// goes to `updates/` when the tree has no such module.
    fn read_override(&self, name: &str, path: &Path) -> Result<LoadedModule> {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let bad = |reason: String| Error::BadModule {
            path: path.to_owned(),
            reason,
        };
        let (file_module, compression) = split_file_name(file_name)
            .ok_or_else(|| bad("its name does not end in .ko, .ko.xz or .ko.gz".to_owned()))?;
        let raw = std::fs::read(path).map_err(Error::io("read", path))?;
        let data = decompress(path, raw, compression)?;
        let info = parse_modinfo(&data).map_err(bad)?;
        let named = info.name.clone().unwrap_or(file_module);
        if named != name {
            return Err(bad(format!("it is module {named}, not {name}")));
        }
        let rel = match self.tree.files.get(name) {
            Some((rel, stock)) => {
                let mut rel = rel.clone();
                if *stock != Compression::None {
                    rel.set_extension("");
                }
                rel
            }
            None => Path::new("updates").join(format!("{name}.ko")),
        };
        Ok(LoadedModule {
            rel,
            path: path.to_owned(),
            data,
            info,
        })
    }
}

impl ModuleSource for TreeLoader<'_> {
    fn lookup(&mut self, name: &str) -> Result<Lookup> {
        if let Some(module) = self.loaded.get(name) {
            return Ok(Lookup::Module(module.info.depends.clone()));
        }
        if let Some(path) = self.overrides.get(name) {
            let module = self.read_override(name, path)?;
            let depends = module.info.depends.clone();
            self.loaded.insert(name.to_owned(), module);
            return Ok(Lookup::Module(depends));
        }
        let Some((rel, compression)) = self.tree.files.get(name) else {
            return Ok(if self.tree.builtin.contains(name) {
                Lookup::Builtin
            } else {
                Lookup::Missing
            });
        };
        let path = self.tree.root.join(rel);
        let raw = std::fs::read(&path).map_err(Error::io("read", &path))?;
        let data = decompress(&path, raw, *compression)?;
        let info = parse_modinfo(&data).map_err(|reason| Error::BadModule {
            path: path.clone(),
            reason,
        })?;
        let mut rel = rel.clone();
        if *compression != Compression::None {
            // `x.ko.xz` → `x.ko`
            rel.set_extension("");
        }
        let depends = info.depends.clone();
        self.loaded.insert(
            name.to_owned(),
            LoadedModule {
                rel,
                path,
                data,
                info,
            },
        );
        Ok(Lookup::Module(depends))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal little-endian ELF64 relocatable file with the given
    /// sections (plus the null section and `.shstrtab`), and program headers
    /// of the given types.
    pub(crate) fn tiny_elf(sections: &[(&str, &[u8])], program_headers: &[u32]) -> Vec<u8> {
        let mut shstrtab = vec![0u8];
        let mut names = Vec::new();
        for (name, _) in sections.iter().chain([(".shstrtab", &[][..])].iter()) {
            names.push(u32::try_from(shstrtab.len()).expect("small"));
            shstrtab.extend_from_slice(name.as_bytes());
            shstrtab.push(0);
        }
        let u16_of = |n: usize| u16::try_from(n).expect("small");
        let u64_of = |n: usize| u64::try_from(n).expect("small");
        // Layout: header, program headers, section data, section headers.
        let phoff = 64;
        let mut data = Vec::new();
        let mut offsets = Vec::new();
        let data_start = phoff + 56 * program_headers.len();
        for (_, bytes) in sections
            .iter()
            .copied()
            .chain([(".shstrtab", &shstrtab[..])])
        {
            offsets.push((data_start + data.len(), bytes.len()));
            data.extend_from_slice(bytes);
        }
        let shoff = (data_start + data.len()).next_multiple_of(8);
        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        out.extend_from_slice(&1u16.to_le_bytes()); // e_type ET_REL
        out.extend_from_slice(&62u16.to_le_bytes()); // e_machine x86-64
        out.extend_from_slice(&1u32.to_le_bytes()); // e_version
        out.extend_from_slice(&0u64.to_le_bytes()); // e_entry
        out.extend_from_slice(
            &u64_of(if program_headers.is_empty() { 0 } else { phoff }).to_le_bytes(),
        );
        out.extend_from_slice(&u64_of(shoff).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        out.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
        out.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
        out.extend_from_slice(&u16_of(program_headers.len()).to_le_bytes());
        out.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
        out.extend_from_slice(&u16_of(sections.len() + 2).to_le_bytes());
        out.extend_from_slice(&u16_of(sections.len() + 1).to_le_bytes()); // e_shstrndx
        for p_type in program_headers {
            out.extend_from_slice(&p_type.to_le_bytes());
            out.extend_from_slice(&[0u8; 52]);
        }
        out.extend_from_slice(&data);
        out.resize(shoff, 0);
        out.extend_from_slice(&[0u8; 64]); // the null section
        for (i, (offset, len)) in offsets.iter().enumerate() {
            let sh_type: u32 = if i == sections.len() { 3 } else { 1 }; // STRTAB / PROGBITS
            out.extend_from_slice(&names[i].to_le_bytes());
            out.extend_from_slice(&sh_type.to_le_bytes());
            out.extend_from_slice(&0u64.to_le_bytes()); // flags
            out.extend_from_slice(&0u64.to_le_bytes()); // addr
            out.extend_from_slice(&u64_of(*offset).to_le_bytes());
            out.extend_from_slice(&u64_of(*len).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes()); // link
            out.extend_from_slice(&0u32.to_le_bytes()); // info
            out.extend_from_slice(&1u64.to_le_bytes()); // addralign
            out.extend_from_slice(&0u64.to_le_bytes()); // entsize
        }
        out
    }

    /// A fake module whose `.modinfo` holds `fields`.
    pub(crate) fn fake_module(fields: &[&str]) -> Vec<u8> {
        let mut modinfo = Vec::new();
        for field in fields {
            modinfo.extend_from_slice(field.as_bytes());
            modinfo.push(0);
        }
        tiny_elf(&[(".text", b"\xc3"), (".modinfo", &modinfo)], &[])
    }

    #[test]
    fn modinfo_gives_name_dependencies_and_vermagic() {
        let elf = fake_module(&[
            "alias=net-pf-16-proto-16-family-802.1Q",
            "depends=mrp,garp",
            "retpoline=Y",
            "intree=Y",
            "name=8021q",
            "vermagic=6.12.117+deb12-cloud-amd64 SMP preempt mod_unload modversions ",
        ]);
        assert_eq!(
            parse_modinfo(&elf),
            Ok(ModInfo {
                name: Some("8021q".into()),
                depends: vec!["mrp".into(), "garp".into()],
                vermagic: Some(
                    "6.12.117+deb12-cloud-amd64 SMP preempt mod_unload modversions".into()
                ),
            })
        );
        let none = fake_module(&["depends=", "name=tun"]);
        assert_eq!(parse_modinfo(&none).map(|i| i.depends), Ok(vec![]));
        let dashed = fake_module(&["depends=net-failover,,failover"]);
        assert_eq!(
            parse_modinfo(&dashed).map(|i| i.depends),
            Ok(vec!["net_failover".to_owned(), "failover".to_owned()])
        );
    }

    #[test]
    fn files_without_modinfo_or_not_elf_are_refused() {
        let no_modinfo = tiny_elf(&[(".text", b"\xc3")], &[]);
        assert_eq!(
            parse_modinfo(&no_modinfo),
            Err("it has no .modinfo section".to_owned())
        );
        assert!(parse_modinfo(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn compressed_modules_decompress_and_zstd_is_refused() {
        let elf = fake_module(&["name=dummy"]);
        let path = Path::new("dummy.ko.xz");
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &elf[..], &mut xz).expect("compresses");
        assert_eq!(decompress(path, xz, Compression::Xz).expect("xz"), elf);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &elf).expect("compresses");
        let gz = gz.finish().expect("compresses");
        assert_eq!(decompress(path, gz, Compression::Gzip).expect("gz"), elf);
        let err = decompress(path, elf.clone(), Compression::Xz).expect_err("not xz");
        assert!(matches!(err, Error::BadModule { .. }), "{err}");
        let err = decompress(Path::new("x.ko.zst"), elf, Compression::Zstd).expect_err("zstd");
        assert!(err.to_string().contains("zstd-compressed"), "{err}");
    }

    #[test]
    fn file_names_give_module_names_with_underscores() {
        assert_eq!(
            split_file_name("8021q.ko.xz"),
            Some(("8021q".into(), Compression::Xz))
        );
        assert_eq!(
            split_file_name("net-failover.ko"),
            Some(("net_failover".into(), Compression::None))
        );
        assert_eq!(
            split_file_name("x.ko.zst"),
            Some(("x".into(), Compression::Zstd))
        );
        assert_eq!(split_file_name("x.ko.cmd"), None);
        assert_eq!(split_file_name(".ko"), None);
        assert_eq!(
            parse_builtin("kernel/drivers/virtio/virtio_pci.ko\nkernel/net/ipv4/udp-tunnel.ko\n\n"),
            BTreeSet::from(["virtio_pci".to_owned(), "udp_tunnel".to_owned()])
        );
    }

    #[test]
    fn overrides_replace_the_stock_module_in_place_with_their_own_dependencies() {
        let scratch = crate::cache::tests::scratch("override");
        let root = scratch.path().join("tree");
        let stock_dir = root.join("kernel/drivers/net/bonding");
        std::fs::create_dir_all(&stock_dir).expect("tree");
        let stock = fake_module(&["name=bonding", "depends=tls"]);
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &stock[..], &mut xz).expect("compresses");
        std::fs::write(stock_dir.join("bonding.ko.xz"), xz).expect("stock");
        std::fs::create_dir_all(root.join("kernel/net/tls")).expect("tree");
        std::fs::write(
            root.join("kernel/net/tls/tls.ko"),
            fake_module(&["name=tls", "depends="]),
        )
        .expect("tls");
        let mutant = fake_module(&["name=bonding", "depends=tls,mutant_helper", "vermagic=x"]);
        let mutant_path = scratch.path().join("bonding.ko");
        std::fs::write(&mutant_path, &mutant).expect("mutant");
        std::fs::write(
            root.join("kernel/mutant_helper.ko"),
            fake_module(&["name=mutant_helper"]),
        )
        .expect("helper");
        let tree = ModuleTree::scan(&root).expect("scanned");

        let mut loader = TreeLoader::new(&tree).with_override("bonding", mutant_path.clone());
        let order = load_order(&["bonding".to_owned()], &mut loader).expect("ordered");
        assert_eq!(order, ["mutant_helper", "tls", "bonding"]);
        let bonding = &loader.loaded["bonding"];
        assert_eq!(bonding.data, mutant);
        assert_eq!(bonding.path, mutant_path);
        assert_eq!(
            bonding.rel,
            Path::new("kernel/drivers/net/bonding/bonding.ko")
        );

        // A module the tree lacks goes to updates/; a file naming another
        // module is refused.
        let mut loader = TreeLoader::new(&tree).with_override("new_mod", mutant_path.clone());
        let err = load_order(&["new_mod".to_owned()], &mut loader).expect_err("misnamed");
        assert!(
            matches!(&err, OrderError::Source(Error::BadModule { reason, .. }) if reason == "it is module bonding, not new_mod"),
            "{err:?}"
        );
        let new_path = scratch.path().join("new_mod.ko");
        std::fs::write(&new_path, fake_module(&["name=new_mod"])).expect("new");
        let mut loader = TreeLoader::new(&tree).with_override("new-mod", new_path);
        load_order(&["new_mod".to_owned()], &mut loader).expect("ordered");
        assert_eq!(
            loader.loaded["new_mod"].rel,
            Path::new("updates/new_mod.ko")
        );
    }

    /// A module source from `(name, depends)` pairs and built-in names.
    struct Fake {
        modules: BTreeMap<String, Vec<String>>,
        builtin: BTreeSet<String>,
        asked: Vec<String>,
    }

    impl Fake {
        fn new(modules: &[(&str, &[&str])], builtin: &[&str]) -> Self {
            Self {
                modules: modules
                    .iter()
                    .map(|(m, d)| ((*m).to_owned(), d.iter().map(|s| (*s).to_owned()).collect()))
                    .collect(),
                builtin: builtin.iter().map(|s| (*s).to_owned()).collect(),
                asked: Vec::new(),
            }
        }
    }

    impl ModuleSource for Fake {
        fn lookup(&mut self, name: &str) -> Result<Lookup> {
            self.asked.push(name.to_owned());
            Ok(match self.modules.get(name) {
                Some(d) => Lookup::Module(d.clone()),
                None if self.builtin.contains(name) => Lookup::Builtin,
                None => Lookup::Missing,
            })
        }
    }

    /// The Debian 6.12 cloud kernel's dependencies for the default modules.
    fn debian_cloud() -> Fake {
        Fake::new(
            &[
                ("tun", &[]),
                ("8021q", &["mrp", "garp"]),
                ("garp", &["stp", "llc"]),
                ("mrp", &[]),
                ("stp", &["llc"]),
                ("llc", &[]),
                ("bonding", &["tls"]),
                ("tls", &[]),
                ("failover", &[]),
                ("net_failover", &["failover"]),
                ("virtio_net", &["net_failover"]),
            ],
            &["virtio_pci"],
        )
    }

    fn check(fake: &mut Fake, wanted: &[&str], want: std::result::Result<&[&str], &str>) {
        let wanted: Vec<String> = wanted.iter().map(|s| (*s).to_owned()).collect();
        let got = load_order(&wanted, fake);
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert_eq!(format!("{got:?}"), want),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn dependencies_load_first_in_a_stable_order() {
        check(
            &mut debian_cloud(),
            &[
                "tun",
                "8021q",
                "bonding",
                "failover",
                "net_failover",
                "virtio-net",
            ],
            Ok(&[
                "tun",
                "llc",
                "stp",
                "garp",
                "mrp",
                "8021q",
                "tls",
                "bonding",
                "failover",
                "net_failover",
                "virtio_net",
            ]),
        );
    }

    #[test]
    fn each_module_is_read_once_and_builtins_are_skipped() {
        let mut fake = debian_cloud();
        check(
            &mut fake,
            &["virtio_pci", "stp", "garp", "llc", "stp"],
            Ok(&["llc", "stp", "garp"]),
        );
        assert_eq!(fake.asked, ["virtio_pci", "stp", "llc", "garp"]);
    }

    #[test]
    fn missing_modules_name_who_needed_them() {
        check(
            &mut debian_cloud(),
            &["tun", "e1000e"],
            Err(r#"Missing { module: "e1000e", needed_by: None }"#),
        );
        let mut broken = Fake::new(&[("bonding", &["tls"])], &[]);
        check(
            &mut broken,
            &["bonding"],
            Err(r#"Missing { module: "tls", needed_by: Some("bonding") }"#),
        );
    }

    #[test]
    fn dependency_cycles_are_reported_with_the_loop() {
        let mut looped = Fake::new(
            &[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])],
            &[],
        );
        check(
            &mut looped,
            &["d", "a"],
            Err(r#"Cycle(["a", "b", "c", "a"])"#),
        );
        let mut own = Fake::new(&[("a", &["a"])], &[]);
        check(&mut own, &["a"], Err(r#"Cycle(["a", "a"])"#));
    }
}
