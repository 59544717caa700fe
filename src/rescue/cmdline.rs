//! The rescue's orders, from the kernel command line:
//! `lifeboat.repo=` (URL, or `usb` for the stick's data partition), `lifeboat.snapshot=`,
//! `lifeboat.target=` (`serial:`, `wwn:`, `path:` or `largest-empty`), `lifeboat.action=`
//! (`restore`, `capture`, `menu`, `poweroff`), `lifeboat.verify=1`,
//! `lifeboat.after=` (`reboot`, `poweroff`, `stay`), `lifeboat.name=` (capture),
//! `lifeboat.token=` (bearer token for pushing a capture to `lifeboat serve`).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::location::RepoLocation;

/// Where the rescue finds its repository: the stick's data partition, or the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RescueRepo {
    Usb,
    Network(RepoLocation),
}

impl FromStr for RescueRepo {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<RescueRepo> {
        if s == "usb" {
            return Ok(RescueRepo::Usb);
        }
        match s.parse::<RepoLocation>() {
            Ok(l @ RepoLocation::Http(_)) => Ok(RescueRepo::Network(l)),
            _ => bail!("lifeboat.repo={s}: expected usb or an http(s) URL"),
        }
    }
}

crate::serde_as_string!(RescueRepo);

impl fmt::Display for RescueRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RescueRepo::Usb => f.write_str("usb"),
            RescueRepo::Network(l) => l.fmt(f),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetSpec {
    Serial(String),
    Wwn(String),
    Path(String),
    LargestEmpty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Restore,
    Capture,
    Menu,
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
    pub target: Option<TargetSpec>,
    pub action: Action,
    pub verify: bool,
    pub after: After,
    pub name: Option<String>,
    #[serde(skip)]
    pub token: Option<String>,
}

impl TargetSpec {
    pub fn parse(s: &str) -> Result<TargetSpec> {
        Ok(match s.split_once(':') {
            Some(("serial", v)) if !v.is_empty() => TargetSpec::Serial(v.into()),
            Some(("wwn", v)) if !v.is_empty() => TargetSpec::Wwn(v.into()),
            Some(("path", v)) if v.starts_with("/dev/") => TargetSpec::Path(v.into()),
            None if s == "largest-empty" => TargetSpec::LargestEmpty,
            _ => {
                bail!("lifeboat.target={s}: expected serial:S, wwn:W, path:/dev/X or largest-empty")
            }
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
    };
    let mut action = None;
    for word in cmdline.split_whitespace() {
        let Some(rest) = word.strip_prefix("lifeboat.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        match key {
            "repo" => o.repo = Some(value.parse()?),
            "snapshot" => o.snapshot = Some(value.into()),
            "target" => o.target = Some(TargetSpec::parse(value)?),
            "name" => o.name = Some(value.into()),
            "token" => o.token = Some(value.into()),
            "verify" => o.verify = matches!(value, "1" | "yes" | "true" | ""),
            "action" => {
                action = Some(match value {
                    "restore" => Action::Restore,
                    "capture" => Action::Capture,
                    "menu" => Action::Menu,
                    "poweroff" => Action::Poweroff,
                    _ => bail!(
                        "lifeboat.action={value}: expected restore, capture, menu or poweroff"
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
        assert_eq!(o.target, Some(TargetSpec::Serial("S123".into())));
        assert_eq!(o.action, Action::Restore);
        assert!(o.verify);
        assert_eq!(o.after, After::Poweroff);
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
        assert!(parse("lifeboat.acton=restore").is_err());
        assert!(parse("lifeboat.action=format").is_err());
        assert_eq!(
            TargetSpec::parse("largest-empty").unwrap(),
            TargetSpec::LargestEmpty
        );
        assert_eq!(
            TargetSpec::parse("path:/dev/vda").unwrap(),
            TargetSpec::Path("/dev/vda".into())
        );
    }
}
