//! Arguments of the image commands (`pull`, `push`, `images`, `rmi`, `tag`, `load`,
//! `save`, `import`, `image inspect`).

use std::path::PathBuf;

use clap::Args;

/// `berth pull REF`
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Image to pull, e.g. `busybox`, `busybox:1.36`, `localhost:5000/x@sha256:..`.
    pub reference: String,
    /// Use plain HTTP and accept any certificate (automatic for localhost registries).
    #[arg(long)]
    pub insecure: bool,
    /// Platform of a multi-arch image, e.g. `linux/amd64` or `linux/arm64/v8`.
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image reference when done.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `berth push REF`
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Image to push; its reference names the registry and repository.
    pub reference: String,
    /// Use plain HTTP and accept any certificate (automatic for localhost registries).
    #[arg(long)]
    pub insecure: bool,
    /// Print only the pushed digest.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `berth images`
#[derive(Debug, Clone, Args)]
pub struct ImagesArgs {
    /// Show all images, untagged ones included.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Only print image ids.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Do not truncate image ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format: `table` (default) or `json` (one JSON object per line).
    #[arg(long)]
    pub format: Option<String>,
    /// Only list images of this repository (optionally with a tag).
    pub repository: Option<String>,
}

/// `berth rmi IMAGE...`
#[derive(Debug, Clone, Args)]
pub struct RmiArgs {
    /// Remove even if containers use the image or it has several names.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Images to remove (names or ids).
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `berth tag SOURCE TARGET`
#[derive(Debug, Clone, Args)]
pub struct TagArgs {
    /// Existing image (name or id).
    pub source: String,
    /// New name.
    pub target: String,
}

/// `berth load -i FILE`
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Archive to read (OCI layout or `docker save` format, tar or tar.gz).
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `berth save -o FILE IMAGE...`
#[derive(Debug, Clone, Args)]
pub struct SaveArgs {
    /// Archive to write (an OCI image layout tar that `docker load` also accepts).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Images to save.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `berth import FILE REF`
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Root filesystem tarball (plain, gzip or zstd).
    pub file: PathBuf,
    /// Name for the new image.
    pub reference: String,
    /// Dockerfile instruction to apply: CMD, ENTRYPOINT, ENV, WORKDIR or USER.
    #[arg(long, short = 'c')]
    pub change: Vec<String>,
}

/// `berth image inspect NAME...`
#[derive(Debug, Clone, Args)]
pub struct ImageInspectArgs {
    /// Images to inspect.
    #[arg(required = true)]
    pub names: Vec<String>,
}
