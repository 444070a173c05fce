//! The image commands: `pull`, `push`, `images`, `rmi`, `tag`, `load`, `save`, `import`
//! and `image inspect`.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::archive::{self, ArchiveError};
use crate::cli::image::{
    ImageInspectArgs, ImagesArgs, ImportArgs, LoadArgs, PullArgs, PushArgs, RmiArgs, SaveArgs,
    TagArgs,
};
use crate::context::Context;
use crate::reference::{Reference, ReferenceError};
use crate::registry::{self, PullOptions, PushOptions, RegistryError};
use crate::store::{Image, ImageStore, RemoveEvent, StoreError};

/// Why an image command failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageCommandError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("cannot find out which containers use image {image}")]
    Containers {
        image: String,
        #[source]
        source: crate::container::ContainerError,
    },
    #[error("conflict: unable to remove image {name} (must force) - it is used by container(s) {containers}")]
    InUse { name: String, containers: String },
    #[error("unsupported --format \"{0}\" (use table, json or a {{{{.Field}}}} template)")]
    Format(String),
    #[error("cannot write the output")]
    Output(#[source] io::Error),
    #[error("cannot encode the output as JSON")]
    Json(#[source] serde_json::Error),
}

impl From<RegistryError> for ImageCommandError {
    fn from(e: RegistryError) -> Self {
        ImageCommandError::Registry(Box::new(e))
    }
}

fn out(line: &str) -> Result<(), ImageCommandError> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}").map_err(ImageCommandError::Output)
}

fn open(ctx: &Context) -> Result<ImageStore, ImageCommandError> {
    Ok(ImageStore::open(&ctx.root)?)
}

/// `berth pull REF`
pub fn pull(ctx: &Context, args: &PullArgs) -> Result<(), ImageCommandError> {
    let reference = Reference::parse(&args.reference)?;
    let store = open(ctx)?;
    let opts = PullOptions {
        insecure: args.insecure,
        platform: args.platform.clone(),
        quiet: args.quiet,
        progress_on_stderr: false,
    };
    registry::pull(&store, &reference, &opts)?;
    if args.quiet {
        out(&reference.to_string())?;
    }
    Ok(())
}

/// `berth push REF`
pub fn push(ctx: &Context, args: &PushArgs) -> Result<(), ImageCommandError> {
    let reference = Reference::parse(&args.reference)?;
    let store = open(ctx)?;
    let opts = PushOptions {
        insecure: args.insecure,
        quiet: args.quiet,
    };
    let digest = registry::push(&store, &reference, &opts)?;
    if args.quiet {
        out(&digest)?;
    }
    Ok(())
}

/// Docker's human size: decimal units, about 3 significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    let digits = if unit == 0 || v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{v:.digits$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
}

/// "3 hours ago", like Docker's CREATED column.
pub fn created_since(created: Option<&str>) -> String {
    let Some(t) = created.and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()) else {
        return "N/A".to_string();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        s if s < 1 => "Less than a second ago".to_string(),
        s if s < 60 => plural(s, "second"),
        s if s < 3600 => plural(s / 60, "minute"),
        s if s < 86_400 => plural(s / 3600, "hour"),
        s if s < 86_400 * 14 => plural(s / 86_400, "day"),
        s if s < 86_400 * 60 => plural(s / (86_400 * 7), "week"),
        s if s < 86_400 * 365 * 2 => plural(s / (86_400 * 30), "month"),
        s => plural(s / (86_400 * 365), "year"),
    }
}

struct Row {
    repository: String,
    tag: String,
    id: String,
    created: String,
    created_at: String,
    size: String,
    digest: String,
}

/// `berth images`
pub fn images(ctx: &Context, args: &ImagesArgs) -> Result<(), ImageCommandError> {
    let store = open(ctx)?;
    let filter = args
        .repository
        .as_deref()
        .map(|r| {
            let has_tag = r.rsplit_once(':').is_some_and(|(_, t)| !t.contains('/'));
            Reference::parse(r).map(|p| (p, has_tag))
        })
        .transpose()?;
    let mut rows = Vec::new();
    for image in store.list()? {
        let id = if args.no_trunc {
            image.id.clone()
        } else {
            image.short_id().to_string()
        };
        let digest = image
            .repo_digests
            .first()
            .and_then(|d| d.rsplit_once('@').map(|(_, d)| d.to_string()))
            .unwrap_or_else(|| "<none>".to_string());
        let mut names: Vec<(String, String)> = image
            .references
            .iter()
            .filter(|r| match &filter {
                Some((f, has_tag)) => f.name() == r.name() && (!has_tag || f.tag() == r.tag()),
                None => true,
            })
            .map(|r| (r.familiar_name(), r.tag().unwrap_or("<none>").to_string()))
            .collect();
        if image.references.is_empty() && filter.is_none() {
            names.push(("<none>".into(), "<none>".into()));
        }
        for (repository, tag) in names {
            rows.push(Row {
                repository,
                tag,
                id: id.clone(),
                created: created_since(image.created.as_deref()),
                created_at: image.created.clone().unwrap_or_default(),
                size: human_size(image.size),
                digest: digest.clone(),
            });
        }
    }
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            if seen.insert(r.id.clone()) {
                out(&r.id)?;
            }
        }
        return Ok(());
    }
    match args.format.as_deref() {
        None | Some("table") => {
            let w = |f: fn(&Row) -> &str, title: &str| {
                rows.iter()
                    .map(|r| f(r).len())
                    .chain([title.len()])
                    .max()
                    .unwrap_or(0)
            };
            let (wr, wt, wi, wc) = (
                w(|r| &r.repository, "REPOSITORY"),
                w(|r| &r.tag, "TAG"),
                w(|r| &r.id, "IMAGE ID"),
                w(|r| &r.created, "CREATED"),
            );
            out(&format!(
                "{:wr$}   {:wt$}   {:wi$}   {:wc$}   SIZE",
                "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
            ))?;
            for r in &rows {
                out(&format!(
                    "{:wr$}   {:wt$}   {:wi$}   {:wc$}   {}",
                    r.repository, r.tag, r.id, r.created, r.size
                ))?;
            }
        }
        Some("json") | Some("{{json .}}") => {
            for r in &rows {
                let v = json!({
                    "Containers": "N/A",
                    "CreatedAt": r.created_at,
                    "CreatedSince": r.created,
                    "Digest": r.digest,
                    "ID": r.id,
                    "Repository": r.repository,
                    "Tag": r.tag,
                    "Size": r.size,
                });
                out(&serde_json::to_string(&v).map_err(ImageCommandError::Json)?)?;
            }
        }
        Some(template) if template.contains("{{") => {
            for r in &rows {
                let line = template
                    .replace("{{.Repository}}", &r.repository)
                    .replace("{{.Tag}}", &r.tag)
                    .replace("{{.ID}}", &r.id)
                    .replace("{{.CreatedSince}}", &r.created)
                    .replace("{{.CreatedAt}}", &r.created_at)
                    .replace("{{.Size}}", &r.size)
                    .replace("{{.Digest}}", &r.digest)
                    .replace("\\t", "\t");
                out(&line)?;
            }
        }
        Some(other) => return Err(ImageCommandError::Format(other.to_string())),
    }
    Ok(())
}

/// `berth rmi IMAGE...`
pub fn rmi(ctx: &Context, args: &RmiArgs) -> Result<(), ImageCommandError> {
    let store = open(ctx)?;
    let mut last_err = None;
    for name in &args.images {
        if let Some(e) = last_err.take() {
            eprintln!("berth: {}", crate::error_chain(&e));
        }
        match rmi_one(ctx, &store, name, args.force) {
            Ok(events) => {
                for e in events {
                    match e {
                        RemoveEvent::Untagged(r) => out(&format!("Untagged: {r}"))?,
                        RemoveEvent::Deleted(id) => out(&format!("Deleted: {id}"))?,
                    }
                }
            }
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn rmi_one(
    ctx: &Context,
    store: &ImageStore,
    name: &str,
    force: bool,
) -> Result<Vec<RemoveEvent>, ImageCommandError> {
    let image = store.resolve(name)?;
    let is_tag = Reference::parse(name)
        .ok()
        .is_some_and(|r| image.references.contains(&r));
    let deletes_image = !is_tag || image.references.len() <= 1;
    if deletes_image && !force {
        let users = crate::container::users_of_image(&ctx.root, &image.id).map_err(|source| {
            ImageCommandError::Containers {
                image: name.to_string(),
                source,
            }
        })?;
        if !users.is_empty() {
            return Err(ImageCommandError::InUse {
                name: name.to_string(),
                containers: users.join(", "),
            });
        }
    }
    Ok(store.untag_or_remove(name, force)?)
}

/// `berth tag SOURCE TARGET`
pub fn tag(ctx: &Context, args: &TagArgs) -> Result<(), ImageCommandError> {
    let target = Reference::parse(&args.target)?;
    open(ctx)?.tag(&args.source, &target)?;
    Ok(())
}

/// `berth load -i FILE`
pub fn load(ctx: &Context, args: &LoadArgs) -> Result<(), ImageCommandError> {
    let store = open(ctx)?;
    let loaded = archive::load(&store, &args.input)?;
    if !args.quiet {
        for line in archive::loaded_lines(&loaded) {
            out(&line)?;
        }
    }
    Ok(())
}

/// `berth save -o FILE IMAGE...`
pub fn save(ctx: &Context, args: &SaveArgs) -> Result<(), ImageCommandError> {
    let store = open(ctx)?;
    archive::save(&store, &args.images, &args.output)?;
    Ok(())
}

/// `berth import FILE REF`
pub fn import(ctx: &Context, args: &ImportArgs) -> Result<(), ImageCommandError> {
    let reference = Reference::parse(&args.reference)?;
    let image = open(ctx)?.import_rootfs(&args.file, &reference, &args.change)?;
    out(&image.id)
}

/// `berth image inspect NAME...`
pub fn inspect(ctx: &Context, args: &ImageInspectArgs) -> Result<(), ImageCommandError> {
    let store = open(ctx)?;
    let values = args
        .names
        .iter()
        .map(|n| store.resolve(n).map(|i| image_json(&store, &i)))
        .collect::<Result<Vec<_>, _>>()?;
    out(&serde_json::to_string_pretty(&Value::Array(values)).map_err(ImageCommandError::Json)?)
}

/// `docker image inspect`'s JSON for one image.
pub fn image_json(_store: &ImageStore, image: &Image) -> Value {
    let cfg = image.config.config().clone().unwrap_or_default();
    let repo_digests: Vec<String> = image
        .repo_digests
        .iter()
        .map(|d| {
            Reference::parse(d)
                .map(|r| r.short())
                .unwrap_or_else(|_| d.clone())
        })
        .collect();
    json!({
        "Id": image.id,
        "RepoTags": image.references.iter().map(Reference::short).collect::<Vec<_>>(),
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": "",
        "Created": image.created.clone().unwrap_or_default(),
        "Author": image.config.author().clone().unwrap_or_default(),
        "Architecture": image.config.architecture().to_string(),
        "Variant": image.config.variant(),
        "Os": image.config.os().to_string(),
        "Size": image.size,
        "Config": {
            "User": cfg.user().clone().unwrap_or_default(),
            "ExposedPorts": cfg.exposed_ports().as_ref().map(|ports| {
                ports.iter().map(|p| (p.clone(), json!({}))).collect::<serde_json::Map<_, _>>()
            }),
            "Env": cfg.env(),
            "Cmd": cfg.cmd(),
            "Entrypoint": cfg.entrypoint(),
            "WorkingDir": cfg.working_dir().clone().unwrap_or_default(),
            "Labels": cfg.labels(),
            "StopSignal": cfg.stop_signal(),
        },
        "RootFS": {
            "Type": "layers",
            "Layers": image.config.rootfs().diff_ids(),
        },
        "Metadata": { "ManifestDigest": image.manifest_digest },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_240), "1.24kB");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(123_000_000), "123MB");
    }

    #[test]
    fn since() {
        assert_eq!(created_since(None), "N/A");
        let t = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
        assert_eq!(created_since(Some(&t)), "3 hours ago");
    }
}
