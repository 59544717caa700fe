//! The rescue's orders, from the kernel command line:
//! `lifeboat.repo=` (URL, `usb` for the stick's data partition, or `cdrom` for the boot
//! ISO's, read-only), `lifeboat.snapshot=`, `lifeboat.media=` (the boot medium's id, which
//! mkimage's grub.cfg adds: that medium is never a target),
//! `lifeboat.target=` (`serial:`, `wwn:`, `path:` or `largest-empty`), `lifeboat.action=`
//! (`restore`, `capture`, `menu`, `diagnose`, `poweroff`), `lifeboat.verify=1`,
//! `lifeboat.force=1` (restore onto a disk whose own health says it is failing),
//! `lifeboat.after=` (`reboot`, `poweroff`, `stay`), `lifeboat.name=` (capture),
//! `lifeboat.token=` (bearer token for pushing a capture to `lifeboat serve`),
//! `lifeboat.password-file=` (an encrypted repository's passphrase; else asked);
//! for `lifeboat.repo=s3://BUCKET/PREFIX`: `lifeboat.s3-endpoint=URL`,
//! `lifeboat.s3-region=`, `lifeboat.s3-key=` and `lifeboat.s3-secret=` (a read-only key
//! for restores: whoever can read the command line can read it).

use std::fmt;
use std::str::FromStr;

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::location::RepoLocation;
use crate::repo::S3Keys;
use crate::restore::targets::Target;

/// Where the rescue finds its repository: the stick's data partition, or the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RescueRepo {
    Usb,
    /// The repository on the boot ISO (`mkimage --with-repo`): a CD, a BMC's virtual
    /// media or the ISO written to a stick; read-only.
    Cdrom,
    Network(RepoLocation),
}

impl FromStr for RescueRepo {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<RescueRepo> {
        match s {
            "usb" => return Ok(RescueRepo::Usb),
            "cdrom" => return Ok(RescueRepo::Cdrom),
            _ => {}
        }
        match s.parse::<RepoLocation>() {
            Ok(l @ (RepoLocation::Http(_) | RepoLocation::S3(_))) => Ok(RescueRepo::Network(l)),
            _ => bail!(
                "lifeboat.repo={s}: expected usb, cdrom, an http(s) URL or s3://BUCKET/PREFIX"
            ),
        }
    }
}

crate::serde_as_string!(RescueRepo);

impl fmt::Display for RescueRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RescueRepo::Usb => f.write_str("usb"),
            RescueRepo::Cdrom => f.write_str("cdrom"),
            RescueRepo::Network(l) => l.fmt(f),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Restore,
    Capture,
    Menu,
    /// Report the hardware (`lifeboat diagnose`), write nothing.
    Diagnose,
    Poweroff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    Reboot,
    Poweroff,
    Stay,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orders {
    pub repo: Option<RescueRepo>,
    pub snapshot: Option<String>,
    /// One per disk of the snapshot, in order (`lifeboat.target=A,B`); `auto` alone
    /// stands for every disk.
    pub target: Option<Vec<Target>>,
    pub action: Action,
    pub verify: bool,
    pub after: After,
    pub name: Option<String>,
    #[serde(skip)]
    pub token: Option<String>,
    /// How to reach an s3:// repository (the secret is never reported).
    #[serde(default, skip_serializing_if = "S3Access::is_empty")]
    pub s3: S3Access,
    /// `lifeboat.trust=ed25519:<hex>`: keys a restored snapshot must be signed by
    /// (unless keys are baked into the rescue, which then win).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust: Vec<crate::crypt::signing::PublicKey>,
    /// `lifeboat.max-age=DURATION`: a snapshot chosen by name must be this recent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// `lifeboat.password-file=PATH`: the passphrase of an encrypted repository, in a
    /// file as the rescue sees it (the stick's data partition is at /mnt/usb); without
    /// it the rescue asks on the console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// `lifeboat.media=ID`: the medium the rescue booted from (16 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
    /// `lifeboat.force=1`: restore even onto a disk whose own health says it is failing.
    #[serde(default)]
    pub force: bool,
    /// `ip=`, `vlan=` and `nameserver=`, as dracut spells them.
    #[serde(default)]
    pub net: super::netconf::NetOrders,
}

/// The endpoint and key of an s3:// repository, from `lifeboat.s3-*=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Access {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub key_id: Option<String>,
    #[serde(skip)]
    pub secret: Option<String>,
}

impl S3Access {
    fn is_empty(&self) -> bool {
        *self == S3Access::default()
    }

    /// The key, when both of its halves were given.
    pub fn keys(&self) -> Option<S3Keys> {
        Some(S3Keys {
            key_id: self.key_id.clone()?,
            secret: self.secret.clone()?,
            region: self.region.clone(),
        })
    }
}

/// Parse /proc/cmdline. Unknown `lifeboat.` keys are errors (a typo must not turn a
/// restore into something else); everything else belongs to the kernel.
pub fn parse(cmdline: &str) -> Result<Orders> {
    let mut o = Orders {
        repo: None,
        snapshot: None,
        target: None,
        action: Action::Menu,
        verify: false,
        after: After::Reboot,
        name: None,
        token: None,
        s3: S3Access::default(),
        trust: Vec::new(),
        max_age: None,
        password_file: None,
        media: None,
        force: false,
        net: Default::default(),
    };
    let mut action = None;
    for word in cmdline.split_whitespace() {
        if o.net.take(word)? {
            continue;
        }
        let Some(rest) = word.strip_prefix("lifeboat.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        match key {
            "repo" => o.repo = Some(value.parse()?),
            "snapshot" => o.snapshot = Some(value.into()),
            "target" => o.target = Some(Target::list_from_orders(value)?),
            "name" => o.name = Some(value.into()),
            "token" => o.token = Some(value.into()),
            "s3-endpoint" => o.s3.endpoint = Some(value.into()),
            "s3-region" => o.s3.region = Some(value.into()),
            "s3-key" => o.s3.key_id = Some(value.into()),
            "s3-secret" => o.s3.secret = Some(value.into()),
            "password-file" => o.password_file = Some(PathBuf::from(value)),
            "media" => {
                if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("lifeboat.media={value}: expected the medium's 16 hex digits");
                }
                o.media = Some(value.into());
            }
            "verify" => o.verify = matches!(value, "1" | "yes" | "true" | ""),
            "force" => o.force = matches!(value, "1" | "yes" | "true" | ""),
            "trust" => {
                for k in value.split(',') {
                    o.trust.push(k.parse().map_err(|e: anyhow::Error| {
                        anyhow::anyhow!("lifeboat.trust={k}: {e:#}")
                    })?);
                }
            }
            "max-age" => {
                crate::time::parse_duration(value).map_err(|e| {
                    anyhow::anyhow!("lifeboat.max-age={value}: {e} (such as 26h, 8d)")
                })?;
                o.max_age = Some(value.into());
            }
            "action" => {
                action = Some(match value {
                    "restore" => Action::Restore,
                    "capture" => Action::Capture,
                    "menu" => Action::Menu,
                    "diagnose" => Action::Diagnose,
                    "poweroff" => Action::Poweroff,
                    _ => bail!(
                        "lifeboat.action={value}: expected restore, capture, menu, diagnose or poweroff"
                    ),
                })
            }
            "after" => {
                o.after = match value {
                    "reboot" => After::Reboot,
                    "poweroff" => After::Poweroff,
                    "stay" => After::Stay,
                    _ => bail!("lifeboat.after={value}: expected reboot, poweroff or stay"),
                }
            }
            _ => bail!("unknown order lifeboat.{key}"),
        }
    }
    o.action = action.unwrap_or(Action::Menu);
    let missing_restore = o.repo.is_none() || o.snapshot.is_none() || o.target.is_none();
    let missing_capture = o.repo.is_none() || o.target.is_none();
    if o.action == Action::Restore && missing_restore {
        bail!(
            "lifeboat.action=restore needs lifeboat.repo=, lifeboat.snapshot= and lifeboat.target="
        );
    }
    if matches!(&o.repo, Some(RescueRepo::Network(RepoLocation::S3(_))))
        && (o.s3.endpoint.is_none() || o.s3.keys().is_none())
    {
        bail!("lifeboat.repo=s3://... needs lifeboat.s3-endpoint=, lifeboat.s3-key= and lifeboat.s3-secret=");
    }
    if o.action == Action::Capture && missing_capture {
        bail!("lifeboat.action=capture needs lifeboat.repo= and lifeboat.target= (the disk to capture)");
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_read_from_the_command_line() {
        let o = parse(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 lifeboat.repo=http://10.0.2.2:8080/ \
             lifeboat.snapshot=web01 lifeboat.target=serial:S123 lifeboat.action=restore \
             lifeboat.verify=1 lifeboat.after=poweroff quiet",
        )
        .unwrap();
        assert_eq!(
            o.repo.as_ref().map(|r| r.to_string()).as_deref(),
            Some("http://10.0.2.2:8080/")
        );
        assert_eq!(o.snapshot.as_deref(), Some("web01"));
        assert_eq!(o.target, Some(vec![Target::Serial("S123".into())]));
        assert_eq!(o.action, Action::Restore);
        assert!(o.verify);
        assert_eq!(o.after, After::Poweroff);
    }

    #[test]
    fn trust_anchors_and_a_maximum_age_come_from_the_command_line() {
        let key = crate::crypt::signing::SigningKey::generate()
            .unwrap()
            .public();
        let o = parse(&format!("lifeboat.trust={key} lifeboat.max-age=26h")).unwrap();
        assert_eq!(o.trust, vec![key]);
        assert_eq!(o.max_age.as_deref(), Some("26h"));
        assert!(parse("lifeboat.trust=ed25519:1234").is_err());
        assert!(parse("lifeboat.max-age=soon").is_err());
        let o = parse("lifeboat.password-file=/mnt/usb/passphrase").unwrap();
        assert_eq!(o.password_file, Some(PathBuf::from("/mnt/usb/passphrase")));
    }

    #[test]
    fn an_s3_repository_comes_with_its_endpoint_and_key() {
        let o = parse(
            "lifeboat.repo=s3://backups/fleet lifeboat.s3-endpoint=http://10.0.2.2:3900 \
             lifeboat.s3-region=garage lifeboat.s3-key=GK1 lifeboat.s3-secret=s3cret",
        )
        .unwrap();
        assert_eq!(o.repo.unwrap().to_string(), "s3://backups/fleet/");
        let k = o.s3.keys().unwrap();
        assert_eq!((k.key_id.as_str(), k.secret.as_str()), ("GK1", "s3cret"));
        assert_eq!(k.region.as_deref(), Some("garage"));
        // The report never holds the secret.
        let json = serde_json::to_string(&o.s3).unwrap();
        assert!(json.contains("GK1") && !json.contains("s3cret"), "{json}");
        assert!(parse("lifeboat.repo=s3://backups/fleet lifeboat.s3-key=GK1").is_err());
    }

    #[test]
    fn no_orders_means_the_menu() {
        let o = parse("console=ttyS0 quiet").unwrap();
        assert_eq!(o.action, Action::Menu);
        assert_eq!(o.after, After::Reboot);
    }

    #[test]
    fn bad_orders_are_refused() {
        assert!(parse("lifeboat.action=restore lifeboat.repo=usb").is_err());
        assert!(
            parse("lifeboat.repo=/srv/repo").is_err(),
            "a directory is no rescue repo"
        );
        assert!(parse("lifeboat.repo=ftp://x/").is_err());
        assert_eq!(
            parse("lifeboat.repo=usb").unwrap().repo,
            Some(RescueRepo::Usb)
        );
        assert!(parse("lifeboat.target=sda").is_err());
        assert_eq!(
            parse("lifeboat.repo=cdrom lifeboat.media=00ff00ff00ff00ff")
                .unwrap()
                .repo,
            Some(RescueRepo::Cdrom)
        );
        assert!(parse("lifeboat.media=../../x").is_err());
        assert!(parse("lifeboat.acton=restore").is_err());
        assert!(parse("lifeboat.action=format").is_err());
        assert_eq!(
            Target::from_order("largest-empty").unwrap(),
            Target::LargestEmpty
        );
        assert_eq!(
            Target::from_order("path:/dev/vda").unwrap(),
            Target::Path("/dev/vda".into())
        );
    }

    #[test]
    fn targets_are_given_one_per_disk() {
        let o = parse(
            "lifeboat.action=capture lifeboat.repo=usb lifeboat.target=serial:A,path:/dev/vdb",
        )
        .unwrap();
        assert_eq!(
            o.target,
            Some(vec![
                Target::Serial("A".into()),
                Target::Path("/dev/vdb".into())
            ])
        );
        let o = parse(
            "lifeboat.action=restore lifeboat.repo=usb lifeboat.snapshot=s lifeboat.target=auto",
        )
        .unwrap();
        assert_eq!(o.target, Some(vec![Target::Auto]));
        assert!(parse("lifeboat.target=auto,,largest-empty").is_err());
    }
}
