//! `docker import --change` instructions (a Dockerfile subset) applied to an image config.

use oci_spec::image::Config;

/// Why a `--change` instruction was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    #[error("--change \"{0}\": unsupported instruction (supported: CMD, ENTRYPOINT, ENV, WORKDIR, USER)")]
    Unsupported(String),
    #[error("--change \"{0}\": missing arguments")]
    Empty(String),
    #[error("--change \"{0}\": ENV needs KEY=VALUE (or KEY VALUE)")]
    BadEnv(String),
}

/// Exec form (`["a","b"]`) or shell form (`a b` → `/bin/sh -c "a b"`), like a Dockerfile.
fn command_form(args: &str) -> Vec<String> {
    if args.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(args) {
            return v;
        }
    }
    vec!["/bin/sh".into(), "-c".into(), args.into()]
}

/// Splits `a=1 "b=2 3" c='4'` into words, honouring quotes and backslashes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (q, '\\') if q != Some('\'') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let prefix = format!("{key}=");
    env.retain(|e| !e.starts_with(&prefix));
    env.push(format!("{key}={value}"));
}

/// Applies each instruction in order to `config`.
pub fn apply_changes(config: &mut Config, changes: &[String]) -> Result<(), ChangeError> {
    for change in changes {
        let trimmed = change.trim();
        let (instr, args) = match trimmed.split_once(char::is_whitespace) {
            Some((i, a)) => (i, a.trim()),
            None => (trimmed, ""),
        };
        if args.is_empty() {
            return Err(ChangeError::Empty(change.clone()));
        }
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => {
                config.set_cmd(Some(command_form(args)));
            }
            "ENTRYPOINT" => {
                config.set_entrypoint(Some(command_form(args)));
            }
            "WORKDIR" => {
                config.set_working_dir(Some(args.to_string()));
            }
            "USER" => {
                config.set_user(Some(args.to_string()));
            }
            "ENV" => {
                let mut env = config.env().clone().unwrap_or_default();
                let ws = words(args);
                if ws.first().is_some_and(|w| w.contains('=')) {
                    for w in ws {
                        let (k, v) = w
                            .split_once('=')
                            .ok_or_else(|| ChangeError::BadEnv(change.clone()))?;
                        if k.is_empty() {
                            return Err(ChangeError::BadEnv(change.clone()));
                        }
                        set_env(&mut env, k, v);
                    }
                } else {
                    // Legacy `ENV KEY value with spaces`.
                    let (k, v) = args
                        .split_once(char::is_whitespace)
                        .ok_or_else(|| ChangeError::BadEnv(change.clone()))?;
                    set_env(&mut env, k, v.trim());
                }
                config.set_env(Some(env));
            }
            _ => return Err(ChangeError::Unsupported(change.clone())),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn apply(changes: &[&str]) -> Result<Config, ChangeError> {
        let mut c = Config::default();
        let changes: Vec<String> = changes.iter().map(|s| s.to_string()).collect();
        apply_changes(&mut c, &changes).map(|()| c)
    }

    #[test]
    fn cmd_and_entrypoint_forms() {
        let c = apply(&[r#"CMD ["sh", "-c", "echo hi"]"#, "ENTRYPOINT /bin/init --x"]).unwrap();
        assert_eq!(
            c.cmd().as_deref(),
            Some(&["sh".to_string(), "-c".into(), "echo hi".into()][..])
        );
        assert_eq!(
            c.entrypoint().as_deref(),
            Some(&["/bin/sh".to_string(), "-c".into(), "/bin/init --x".into()][..])
        );
        let c = apply(&["cmd [\"sh\"]"]).unwrap();
        assert_eq!(c.cmd().as_deref(), Some(&["sh".to_string()][..]));
    }

    #[test]
    fn env_workdir_user() {
        let c = apply(&[
            "ENV A=1 B=\"two words\"",
            "ENV C three four",
            "ENV A=replaced",
            "WORKDIR /srv",
            "USER 1000:1000",
        ])
        .unwrap();
        assert_eq!(
            c.env().clone().unwrap(),
            vec![
                "B=two words".to_string(),
                "C=three four".into(),
                "A=replaced".into()
            ]
        );
        assert_eq!(c.working_dir().as_deref(), Some("/srv"));
        assert_eq!(c.user().as_deref(), Some("1000:1000"));
    }

    #[test]
    fn errors() {
        assert!(matches!(
            apply(&["EXPOSE 80"]),
            Err(ChangeError::Unsupported(_))
        ));
        assert!(matches!(apply(&["CMD"]), Err(ChangeError::Empty(_))));
        assert!(matches!(apply(&["ENV =x"]), Err(ChangeError::BadEnv(_))));
        assert!(matches!(
            apply(&["ENV lonely"]),
            Err(ChangeError::BadEnv(_))
        ));
    }
}
