//! `lookd config default|check|network-allow`: print the annotated default, validate a file, or
//! write the systemd drop-in that lets lookd reach only its broker and the hosts named.

use std::path::PathBuf;

use lookd::config::{Config, DEFAULT_TOML};

use super::code;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print the default configuration, every key documented
    Default,
    /// Validate a configuration file (exit 78 when it is bad)
    Check {
        #[arg(long, default_value = "/etc/lookd/lookd.toml")]
        config: PathBuf,
    },
    /// Print a systemd drop-in for lookd.service whose IPAddressAllow= names only localhost, the
    /// configured broker and each --allow (the fleet's file server, a kiosk screen elsewhere),
    /// instead of the packaged unit's every private range (docs/privacy.md)
    NetworkAllow {
        #[arg(long, default_value = "/etc/lookd/lookd.toml")]
        config: PathBuf,
        /// A host name, an address or a CIDR range lookd must also reach, or be reached from
        /// (repeat it): the fleet's catalog server, the kiosk screen's address if it is not this
        /// machine
        #[arg(long)]
        allow: Vec<String>,
    },
}

/// The drop-in: `[Service]` with `IPAddressAllow=` emptied (the packaged unit's ranges dropped),
/// then localhost and each of `allowed` (what was asked, and the addresses it stands for).
fn drop_in(config: &std::path::Path, allowed: &[(String, Vec<String>)]) -> String {
    let mut out = format!(
        "# /etc/systemd/system/lookd.service.d/network.conf, written by\n\
         # `lookd config network-allow --config {}`: lookd reaches, and is reached from, only these.\n\
         # Names were resolved when this was written: write it again when an address changes.\n\
         [Service]\nIPAddressDeny=any\nIPAddressAllow=\nIPAddressAllow=localhost\n",
        config.display()
    );
    for (what, addresses) in allowed {
        out.push_str(&format!("# {what}\n"));
        for a in addresses {
            out.push_str(&format!("IPAddressAllow={a}\n"));
        }
    }
    out
}

/// The addresses `host` stands for: itself when it is an address or a CIDR range, else what the
/// system's resolver says.
fn addresses(host: &str) -> anyhow::Result<Vec<String>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let (addr, prefix) = bare.split_once('/').map_or((bare, None), |(a, p)| (a, Some(p)));
    if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if let Some(p) = prefix {
            anyhow::ensure!(p.parse::<u8>().is_ok_and(|p| p <= max), "{host:?}: bad prefix length");
        }
        return Ok(vec![bare.to_string()]);
    }
    anyhow::ensure!(prefix.is_none(), "{host:?}: a range needs an address, not a name");
    use std::net::ToSocketAddrs;
    let mut found: Vec<String> = (bare, 0)
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("{host:?} cannot be resolved: {e}"))?
        .map(|a| a.ip().to_string())
        .collect();
    found.sort();
    found.dedup();
    anyhow::ensure!(!found.is_empty(), "{host:?} resolves to no address");
    Ok(found)
}

/// What `lookd run` refuses at start beyond the file itself: the model folder, the catalog CSV
/// (without it run would serve whatever old cache there is and never rebuild it) and the
/// configured category, looked up among the catalog's categories as run looks it up.
fn check_as_run(path: &std::path::Path, c: &Config) -> anyhow::Result<()> {
    use lookd::config::ConfigError::Invalid;
    let invalid = |key: &'static str, message: String| Invalid { path: path.to_path_buf(), key, message };
    lookd::model::ModelFolder::open(&c.model).map_err(|e| invalid("model", e.to_string()))?;
    if !c.catalog_csv.exists() {
        let message = format!(
            "{} does not exist (lookd run would serve only an existing cache and could never rebuild it)",
            c.catalog_csv.display()
        );
        return Err(invalid("catalog.csv", message).into());
    }
    let catalog =
        lookd::catalog::Catalog::read(&c.catalog_csv).map_err(|e| invalid("catalog.csv", e.to_string()))?;
    super::category_in_catalog(&catalog, &c.category).map_err(|m| invalid("pipeline.category", m))?;
    Ok(())
}

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Default => {
            print!("{DEFAULT_TOML}");
            Ok(code::OK)
        }
        Command::Check { config } => {
            let c = Config::load(&config)?;
            check_as_run(&config, &c)?;
            println!("{}: ok (device {}, topics under {}/)", config.display(), c.device_id, c.prefix);
            Ok(code::OK)
        }
        Command::NetworkAllow { config, allow } => {
            let c = Config::load(&config)?;
            let mut allowed = Vec::new();
            if let lookd::config::Broker::External { host, .. } = &c.broker {
                allowed.push((format!("the broker, {host}"), addresses(host)?));
            }
            for host in &allow {
                allowed.push((format!("--allow {host}"), addresses(host)?));
            }
            print!("{}", drop_in(&config, &allowed));
            Ok(code::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_in_empties_the_packaged_ranges_then_names_each_address() {
        let allowed = [
            ("the broker, mqtt.store".to_string(), vec!["10.1.2.3".to_string()]),
            ("--allow 192.168.7.0/24".to_string(), addresses("192.168.7.0/24").unwrap()),
        ];
        let text = drop_in(std::path::Path::new("/etc/lookd/lookd.toml"), &allowed);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "[Service]",
                "IPAddressDeny=any",
                "IPAddressAllow=",
                "IPAddressAllow=localhost",
                "IPAddressAllow=10.1.2.3",
                "IPAddressAllow=192.168.7.0/24"
            ]
        );
    }

    #[test]
    fn addresses_and_ranges_are_kept_and_bad_ones_refused() {
        assert_eq!(addresses("10.0.0.7").unwrap(), ["10.0.0.7"]);
        assert_eq!(addresses("[fd00::1]").unwrap(), ["fd00::1"]);
        assert_eq!(addresses("localhost").unwrap().first().map(String::as_str), Some("127.0.0.1"));
        assert!(addresses("10.0.0.0/33").is_err());
        assert!(addresses("host.example/24").is_err());
    }
}
