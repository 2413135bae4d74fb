//! Policy files: the host's initial configuration of the PF and its VFs.
//!
//! ```toml
//! [pf]
//! vlan_mode = "single"      # or "double"
//! link_up = true
//!
//! [vf0]
//! trust = false
//! spoofchk = true
//! admin_mac = "02:00:00:00:00:10"
//! port_vlan = 100
//! max_macs = 18
//! max_vlans = 8
//! vlan_v2 = true
//! link = "auto"             # "enable", "disable"
//! role = "driver"           # or "kernel": see `VfRole`
//! ```
//!
//! Keys left out keep the defaults of [`VfPolicy`] (and the driver role);
//! unknown keys are errors. `role` is not a policy key: it is fixed when the
//! daemon starts and lands in [`PfConfig::roles`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use virtchnl::MacAddr;

use super::{DaemonError as Error, Result};
use crate::pf::{LinkState, PfConfig, VfId, VfPolicy, VfRole, VlanMode};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PfSection {
    vlan_mode: Option<VlanMode>,
    link_up: Option<bool>,
    link_speed_mbps: Option<u32>,
    true_promisc: Option<bool>,
}

/// A `[vfN]` table: the [`VfPolicy`] keys and `role`. The policy keys are
/// spelled out rather than `#[serde(flatten)]`ed, which would lose both
/// `deny_unknown_fields` and the parser's positions; the conversions below
/// name every field, so a new policy key cannot be forgotten here.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct VfSection {
    role: VfRole,
    trust: bool,
    spoofchk: bool,
    admin_mac: Option<MacAddr>,
    port_vlan: Option<u16>,
    max_macs: u16,
    max_vlans: u16,
    vlan_v2: bool,
    link: LinkState,
}

impl Default for VfSection {
    fn default() -> Self {
        let VfPolicy {
            trust,
            spoofchk,
            admin_mac,
            port_vlan,
            max_macs,
            max_vlans,
            vlan_v2,
            link,
        } = VfPolicy::default();
        VfSection {
            role: VfRole::default(),
            trust,
            spoofchk,
            admin_mac,
            port_vlan,
            max_macs,
            max_vlans,
            vlan_v2,
            link,
        }
    }
}

impl VfSection {
    fn into_parts(self) -> (VfRole, VfPolicy) {
        let policy = VfPolicy {
            trust: self.trust,
            spoofchk: self.spoofchk,
            admin_mac: self.admin_mac,
            port_vlan: self.port_vlan,
            max_macs: self.max_macs,
            max_vlans: self.max_vlans,
            vlan_v2: self.vlan_v2,
            link: self.link,
        };
        (self.role, policy)
    }
}

/// The file: a `[pf]` table and `[vfN]` tables. Deserialised by hand rather
/// than with `#[serde(flatten)]`, which would lose the parser's positions.
#[derive(Debug, Default)]
struct PolicyFile {
    pf: PfSection,
    vfs: BTreeMap<u16, VfSection>,
}

impl<'de> Deserialize<'de> for PolicyFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PolicyFile;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a [pf] table and [vf0], [vf1], ... tables")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<PolicyFile, A::Error> {
                let mut file = PolicyFile::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "pf" {
                        file.pf = map.next_value()?;
                        continue;
                    }
                    let index = key
                        .strip_prefix("vf")
                        .and_then(|n| n.parse::<u16>().ok())
                        .ok_or_else(|| {
                            serde::de::Error::custom(format!(
                                "unknown table [{key}]; expected [pf] or [vfN]"
                            ))
                        })?;
                    file.vfs.insert(index, map.next_value()?);
                }
                Ok(file)
            }
        }

        d.deserialize_map(Visitor)
    }
}

/// Reads `path` and applies it to a PF configuration with `num_vfs` VFs.
pub fn load(path: &Path, num_vfs: u16) -> Result<PfConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: "read the policy file",
        path: path.to_owned(),
        source,
    })?;
    parse(&text, num_vfs).map_err(|message| Error::PolicyFile {
        path: path.to_owned(),
        message,
    })
}

/// Parses a policy file's text (see the module docs).
pub fn parse(text: &str, num_vfs: u16) -> std::result::Result<PfConfig, String> {
    let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut config = PfConfig {
        num_vfs,
        policies: vec![VfPolicy::default(); usize::from(num_vfs)],
        ..PfConfig::default()
    };
    config.vlan_mode = file.pf.vlan_mode.unwrap_or(config.vlan_mode);
    config.link_up = file.pf.link_up.unwrap_or(config.link_up);
    config.link_speed_mbps = file.pf.link_speed_mbps.unwrap_or(config.link_speed_mbps);
    config.true_promisc = file.pf.true_promisc.unwrap_or(config.true_promisc);
    for (index, section) in file.vfs {
        let slot = config.policies.get_mut(usize::from(index)).ok_or_else(|| {
            format!("[vf{index}] names a VF the PF does not have (it has {num_vfs})")
        })?;
        let (role, policy) = section.into_parts();
        *slot = policy;
        if !role.is_driver() {
            config.roles.insert(VfId(index), role);
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::parse;
    use crate::pf::{LinkState, VfId, VfPolicy, VfRole, VlanMode};

    #[test]
    fn a_policy_file_sets_the_pf_and_each_vf() {
        let config = parse(
            "[pf]\nvlan_mode = \"double\"\n\n[vf1]\ntrust = true\nport_vlan = 10\nlink = \"disable\"\n",
            2,
        )
        .expect("valid file");
        assert_eq!(config.vlan_mode, VlanMode::Double);
        assert!(!config.policies[0].trust);
        assert!(config.policies[1].trust);
        assert_eq!(config.policies[1].port_vlan, Some(10));
        assert_eq!(config.policies[1].link, LinkState::Disable);
        assert!(config.policies[1].spoofchk, "keys left out keep defaults");
    }

    #[test]
    fn a_vf_table_may_give_the_kernel_role_next_to_its_policy() {
        let config = parse(
            "[vf1]\nrole = \"kernel\"\nadmin_mac = \"02:00:00:00:00:11\"\n\n[vf0]\nrole = \"driver\"\n",
            2,
        )
        .expect("valid file");
        assert_eq!(config.roles.get(&VfId(1)), Some(&VfRole::Kernel));
        assert_eq!(config.roles.len(), 1, "the driver role is the default");
        assert_eq!(
            config.policies[1].admin_mac,
            Some("02:00:00:00:00:11".parse().expect("MAC"))
        );
        assert_eq!(config.policies[0], VfPolicy::default());
        let err = parse("[vf0]\nrole = \"kernal\"\n", 1).unwrap_err();
        assert!(err.contains("kernal") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn mistakes_name_the_line_or_the_table() {
        let err = parse("[vf0]\ntrust = true\ntrusted = false\n", 1).unwrap_err();
        assert!(err.contains("trusted") && err.contains("line 3"), "{err}");
        let err = parse("[vf3]\ntrust = true\n", 2).unwrap_err();
        assert!(err.contains("[vf3]") && err.contains("has 2"), "{err}");
        let err = parse("[vlan]\n", 2).unwrap_err();
        assert!(err.contains("[vlan]"), "{err}");
        let err = parse("[vf0]\nadmin_mac = \"nope\"\n", 1).unwrap_err();
        assert!(err.contains("invalid MAC"), "{err}");
    }
}
