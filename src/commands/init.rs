//! `lifeboat init`: create a repository.

use anyhow::{bail, Result};
use clap::Args;

use crate::location::RepoLocation;
use crate::repo::keyfile::KeyFileId;
use crate::repo::{ChunkerParams, Config, Object, RepoSpec, Repository};
use crate::ui::Outcome;

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Directory to create (must be absent or empty), or s3://BUCKET/PREFIX (an empty
    /// prefix of an existing bucket).
    #[arg(long, env = "LIFEBOAT_REPO", value_name = "DIR_OR_S3")]
    pub repo: RepoLocation,
    /// The S3 endpoint of an s3:// repository (credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY, region from AWS_REGION).
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Average chunk size in KiB (minimum is a quarter, maximum four times this).
    #[arg(long, default_value_t = 64, value_name = "KIB")]
    pub chunk_avg_kib: u32,
    /// zstd compression level for chunks.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(-7..=19))]
    pub level: i32,
    /// Repository format: 1 keeps a file per chunk; 2 appends chunks into pack files of
    /// about 16 MiB named by index files (see docs/repository-format.md).
    #[arg(long, default_value_t = crate::repo::REPO_VERSION, value_parser = clap::value_parser!(u32).range(1..=2))]
    pub format_version: u32,
    /// Record this public key (NAME.pub) in the repository: readers that bring no
    /// --trust of their own then require every snapshot to be signed by one of the keys
    /// recorded. Repeatable.
    #[arg(long, value_name = "NAME.pub")]
    pub require_signed: Vec<std::path::PathBuf>,
    /// Encrypt the repository: chunks, packs, index files and manifests are sealed under
    /// a random master key (AES-256-GCM-SIV), chunk ids and the chunker are keyed, and
    /// the master key is kept in keys/ under the passphrase (argon2id). Keep a recovery
    /// copy (`lifeboat key export`) away from the machines it protects.
    #[arg(long)]
    pub encrypt: bool,
    /// With --encrypt: the file whose first line is the passphrase (otherwise asked
    /// twice on the terminal).
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<std::path::PathBuf>,
}

/// The new repository's config, as stored.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct Created {
    #[serde(skip)]
    pub dir: String,
    #[serde(skip)]
    pub key_file: Option<KeyFileId>,
    pub config: Config,
}

impl Outcome for Created {
    fn print(&self) {
        crate::outln!("created repository {} (id {})", self.dir, self.config.id);
        if let Some(name) = self.key_file {
            crate::outln!(
                "encrypted; its master key is in {} under your passphrase. Keep a recovery copy apart: lifeboat key export --repo {}",
                Object::KeyFile(name),
                self.dir
            );
        }
    }
}

pub fn run(args: &InitArgs) -> Result<Created> {
    if !(4..=1024).contains(&args.chunk_avg_kib) {
        bail!("--chunk-avg-kib must be between 4 and 1024");
    }
    let avg = args.chunk_avg_kib * 1024;
    let params = ChunkerParams {
        min_size: avg / 4,
        avg_size: avg,
        max_size: avg * 4,
        ..Default::default()
    };
    let mut config = Config::new(params, args.level, args.format_version)?;
    if !args.require_signed.is_empty() {
        let keys = args
            .require_signed
            .iter()
            .map(|p| crate::crypt::signing::PublicKey::load(p))
            .collect::<Result<Vec<_>>>()?;
        config.signing = Some(crate::repo::SigningConfig { keys });
    }
    let secret = if args.encrypt {
        if args.format_version < 2 {
            bail!("an encrypted repository is of format 2 or later");
        }
        config.encryption = Some(crate::repo::EncryptionConfig::current());
        let pass = crate::crypt::passphrase::get_new(
            args.password_file.as_deref(),
            "passphrase for the new repository",
            "--encrypt needs a passphrase: --password-file or LIFEBOAT_PASSWORD_FILE",
        )?;
        Some((
            crate::crypt::MasterKey::generate()?,
            crate::crypt::Passphrase::new(pass),
        ))
    } else {
        if args.password_file.is_some() && std::env::var_os("LIFEBOAT_PASSWORD_FILE").is_none() {
            bail!("--password-file goes with --encrypt");
        }
        None
    };
    let encrypt = secret.as_ref().map(|(m, p)| (m, p));
    let r = match &args.repo {
        RepoLocation::Dir(dir) => Repository::create_dir(dir, config, encrypt)?,
        RepoLocation::S3(_) => {
            let spec = RepoSpec {
                s3_endpoint: args.s3_endpoint.clone(),
                ..RepoSpec::at(args.repo.clone())
            };
            let store = std::sync::Arc::new(spec.s3_store()?);
            Repository::create_in(store, &args.repo.to_string(), config, encrypt)?
        }
        RepoLocation::Http(_) => bail!(
            "{}: create a repository on the server's disk (lifeboat init there), then serve it",
            args.repo
        ),
    };
    let key_file = if r.is_encrypted() {
        crate::repo::keyring::list(&**r.store())?
            .into_iter()
            .next()
            .map(|k| k.name)
    } else {
        None
    };
    Ok(Created {
        dir: args.repo.to_string(),
        key_file,
        config: r.config,
    })
}
