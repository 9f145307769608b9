//! Outgoing email: the message templates, the [`Mailer`] interface and its three
//! implementations — SMTP for production, a development mailer that logs each message and
//! keeps it as an `.eml` file, and an in-memory mailer from which tests read the links.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    MagicLink,
    PasswordReset,
    EmailVerification,
    Invitation,
    PasswordChanged,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::MagicLink => "magic_link",
            MailKind::PasswordReset => "password_reset",
            MailKind::EmailVerification => "email_verification",
            MailKind::Invitation => "invitation",
            MailKind::PasswordChanged => "password_changed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub kind: MailKind,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{0}")]
    Send(String),
    #[error("{0}")]
    Config(String),
}

#[async_trait::async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, message: Message) -> Result<(), MailError>;
}

/// What a template may use.
pub struct TemplateContext<'a> {
    pub tenant_name: &'a str,
    pub recipient_name: Option<&'a str>,
    pub link: Option<&'a str>,
    pub expires_minutes: Option<u32>,
}

/// The wording of one kind of message. Every piece is plain text; the HTML version escapes
/// each piece as a whole, so no interpolated value reaches the HTML unescaped.
struct Template {
    subject: String,
    intro: String,
    /// The label of the link, when the message has one.
    action: &'static str,
    /// A sentence about the link's lifetime, when it has one.
    expiry: Option<String>,
    outro: &'static str,
}

fn template(kind: MailKind, ctx: &TemplateContext<'_>) -> Template {
    let tenant = single_line(ctx.tenant_name);
    let lifetime = ctx.expires_minutes.map(describe_minutes);
    match kind {
        MailKind::MagicLink => Template {
            subject: format!("Sign in to {tenant}"),
            intro: format!("Use the link below to sign in to {tenant}."),
            action: "Sign in",
            expiry: lifetime.map(|l| format!("The link works once and expires in {l}.")),
            outro: "If you did not ask to sign in, you can ignore this email.",
        },
        MailKind::PasswordReset => Template {
            subject: format!("Reset your {tenant} password"),
            intro: format!(
                "Someone, hopefully you, asked to reset the password of your {tenant} account."
            ),
            action: "Choose a new password",
            expiry: lifetime.map(|l| format!("The link works once and expires in {l}.")),
            outro: "If you did not ask for this, ignore this email: your password stays as it is.",
        },
        MailKind::EmailVerification => Template {
            subject: format!("Confirm your email address for {tenant}"),
            intro: format!("Please confirm that this is your email address for {tenant}."),
            action: "Confirm my email address",
            expiry: lifetime.map(|l| format!("The link expires in {l}.")),
            outro: "If you did not create an account, you can ignore this email.",
        },
        MailKind::Invitation => Template {
            subject: format!("You are invited to join {tenant}"),
            intro: format!("You have been invited to create an account at {tenant}."),
            action: "Accept the invitation",
            expiry: lifetime.map(|l| format!("The invitation expires in {l}.")),
            outro: "If you were not expecting this invitation, you can ignore this email.",
        },
        MailKind::PasswordChanged => Template {
            subject: format!("Your {tenant} password was changed"),
            intro: format!("The password of your {tenant} account has just been changed."),
            action: "Reset my password",
            expiry: None,
            outro: "If you made this change, there is nothing to do. If you did not, reset \
                    your password right away and tell your administrator.",
        },
    }
}

/// Built-in templates, one per kind: subject, plain text and HTML (every interpolated
/// value HTML-escaped).
pub fn render(kind: MailKind, to: &str, ctx: &TemplateContext<'_>) -> Message {
    let t = template(kind, ctx);
    let tenant = single_line(ctx.tenant_name);
    let greeting = match ctx.recipient_name.map(single_line) {
        Some(name) if !name.is_empty() => format!("Hello {name},"),
        _ => "Hello,".to_owned(),
    };

    let mut text = format!("{greeting}\n\n{}\n\n", t.intro);
    if let Some(link) = ctx.link {
        text.push_str(&format!("{}:\n{link}\n\n", t.action));
    }
    if let Some(expiry) = &t.expiry {
        text.push_str(&format!("{expiry}\n\n"));
    }
    text.push_str(&format!("{}\n\n-- \n{tenant}\n", t.outro));

    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title></head>\n\
         <body style=\"font-family: system-ui, sans-serif; line-height: 1.5; color: #1a1a1a; \
         max-width: 36em; margin: 0 auto; padding: 1em;\">\n<p>{}</p>\n<p>{}</p>\n",
        escape_html(&t.subject),
        escape_html(&greeting),
        escape_html(&t.intro),
    );
    if let Some(link) = ctx.link {
        let link = escape_html(link);
        // Only web links become clickable; anything else is shown, never followed.
        if ctx.link.is_some_and(is_web_link) {
            html.push_str(&format!(
                "<p><a href=\"{link}\" style=\"display: inline-block; padding: 0.6em 1.2em; \
                 background: #1f4ed8; color: #ffffff; text-decoration: none; \
                 border-radius: 4px;\">{}</a></p>\n\
                 <p style=\"font-size: 0.875em; color: #555555;\">If the button does not work, \
                 copy this link into your browser:<br>{link}</p>\n",
                escape_html(t.action),
            ));
        } else {
            html.push_str(&format!("<p>{}: {link}</p>\n", escape_html(t.action)));
        }
    }
    if let Some(expiry) = &t.expiry {
        html.push_str(&format!("<p>{}</p>\n", escape_html(expiry)));
    }
    html.push_str(&format!(
        "<p>{}</p>\n<p style=\"color: #555555;\">{}</p>\n</body>\n</html>\n",
        escape_html(t.outro),
        escape_html(&tenant),
    ));

    Message {
        kind,
        to: to.to_owned(),
        subject: t.subject,
        text,
        html,
    }
}

fn is_web_link(link: &str) -> bool {
    let lower = link.get(..8).unwrap_or(link).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// "15 minutes", "1 hour", "7 days".
fn describe_minutes(minutes: u32) -> String {
    // Whole days or hours read better; the check avoids `is_multiple_of` (MSRV 1.85).
    let (days, hours) = (minutes / 1440, minutes / 60);
    let (n, unit) = if days > 0 && days * 1440 == minutes {
        (days, "day")
    } else if hours > 0 && hours * 60 == minutes {
        (hours, "hour")
    } else {
        (minutes, "minute")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Control characters (line breaks above all) replaced by spaces, so a value cannot add
/// lines to a subject or reshape the plain-text body.
fn single_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn parse_recipient(to: &str) -> Result<Mailbox, MailError> {
    to.parse()
        .map_err(|_| MailError::Send("invalid recipient address".into()))
}

fn parse_sender(from: &str) -> Result<Mailbox, MailError> {
    from.parse()
        .map_err(|e| MailError::Config(format!("invalid sender address {from:?}: {e}")))
}

/// The RFC 5322 message: multipart/alternative with the text and HTML versions.
fn build_email(from: &Mailbox, message: &Message) -> Result<lettre::Message, MailError> {
    lettre::Message::builder()
        .from(from.clone())
        .to(parse_recipient(&message.to)?)
        .subject(message.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            message.text.clone(),
            message.html.clone(),
        ))
        .map_err(|e| MailError::Send(format!("building the message: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Implicit TLS (SMTPS), usually port 465.
    Required,
    /// STARTTLS, which the server must offer (usually port 587).
    StartTls,
    /// Plain text: only for a relay on the local host or network.
    None,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// The sender, e.g. `Portcullis <no-reply@example.com>`.
    pub from: String,
    pub timeout: Duration,
}

/// Sends through an SMTP server, with rustls for TLS.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    pub fn new(settings: SmtpSettings) -> Result<Self, MailError> {
        let from = parse_sender(&settings.from)?;
        let host = settings.host.as_str();
        let tls_error = |e: lettre::transport::smtp::Error| {
            MailError::Config(format!("SMTP TLS settings for {host}: {e}"))
        };
        let builder = match settings.tls {
            SmtpTls::Required => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(tls_error)?
            }
            SmtpTls::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(tls_error)?
            }
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        };
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        match (settings.username, settings.password) {
            (Some(user), Some(password)) => {
                builder = builder
                    .credentials(Credentials::new(user, password.expose_secret().to_owned()));
            }
            (None, None) => {}
            _ => {
                return Err(MailError::Config(
                    "SMTP username and password go together".into(),
                ))
            }
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, message: Message) -> Result<(), MailError> {
        let email = build_email(&self.from, &message)?;
        self.transport
            .send(email)
            .await
            .map_err(|e| MailError::Send(format!("SMTP: {e}")))?;
        tracing::debug!(kind = message.kind.as_str(), "mail sent");
        Ok(())
    }
}

/// For development: sends nothing, logs each message (links included, which is the point)
/// and writes it to `<dir>/<timestamp>-<kind>-<n>.eml`.
#[derive(Debug)]
pub struct DevMailer {
    dir: PathBuf,
    from: String,
    sent: AtomicU64,
}

impl DevMailer {
    pub fn new(dir: PathBuf, from: String) -> Self {
        Self {
            dir,
            from,
            sent: AtomicU64::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Mailer for DevMailer {
    async fn send(&self, message: Message) -> Result<(), MailError> {
        let email = build_email(&parse_sender(&self.from)?, &message)?;
        tracing::info!(
            kind = message.kind.as_str(),
            to = %message.to,
            subject = %message.subject,
            body = %message.text,
            "development mailer: message not sent"
        );
        let n = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!(
            "{}-{}-{n}.eml",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
            message.kind.as_str()
        );
        let path = self.dir.join(name);
        write_private(&self.dir, &path, &email.formatted())
            .await
            .map_err(|e| MailError::Send(format!("writing {}: {e}", path.display())))?;
        Ok(())
    }
}

/// Writes `bytes` to a new file at `path` that only this user may read (0600, in a 0700
/// directory): the messages hold sign-in links.
async fn write_private(
    dir: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).await?;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
    tokio::io::AsyncWriteExt::flush(&mut file).await
}

/// Keeps every message in memory, for tests.
#[derive(Clone, Default)]
pub struct MemoryMailer {
    messages: Arc<Mutex<Vec<Message>>>,
}

impl MemoryMailer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn messages(&self) -> Vec<Message> {
        self.lock().clone()
    }

    pub fn last_to(&self, to: &str) -> Option<Message> {
        self.lock().iter().rev().find(|m| m.to == to).cloned()
    }

    /// The first http(s) link in the plain-text body of the last message to `to`.
    pub fn last_link_to(&self, to: &str) -> Option<String> {
        first_link(&self.last_to(to)?.text)
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Message>> {
        // A test that panicked while holding the lock leaves a usable list behind.
        self.messages.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Mailer for MemoryMailer {
    async fn send(&self, message: Message) -> Result<(), MailError> {
        // Refuse what SMTP would refuse, so tests see the same errors.
        parse_recipient(&message.to)?;
        self.lock().push(message);
        Ok(())
    }
}

fn first_link(text: &str) -> Option<String> {
    let start = match (text.find("https://"), text.find("http://")) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '<' | '>' | '"' | '\''))
        .collect();
    Some(link.trim_end_matches(['.', ',', ')', ';']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn ctx<'a>(tenant: &'a str, link: Option<&'a str>) -> TemplateContext<'a> {
        TemplateContext {
            tenant_name: tenant,
            recipient_name: Some("Jo"),
            link,
            expires_minutes: Some(15),
        }
    }

    const KINDS: [MailKind; 5] = [
        MailKind::MagicLink,
        MailKind::PasswordReset,
        MailKind::EmailVerification,
        MailKind::Invitation,
        MailKind::PasswordChanged,
    ];

    #[test]
    fn every_kind_renders_with_its_link() {
        let link = "https://id.example.com/t/acme/magic?token=abc&x=1";
        let mut subjects = std::collections::HashSet::new();
        for kind in KINDS {
            let m = render(kind, "jo@example.com", &ctx("Acme", Some(link)));
            assert_eq!(m.kind, kind);
            assert_eq!(m.to, "jo@example.com");
            assert!(m.subject.contains("Acme"), "{kind:?}");
            assert!(
                subjects.insert(m.subject.clone()),
                "{kind:?} has its own subject"
            );
            assert!(m.text.starts_with("Hello Jo,"));
            assert!(m.text.contains(link));
            assert!(m
                .html
                .contains("href=\"https://id.example.com/t/acme/magic?token=abc&amp;x=1\""));
            if kind != MailKind::PasswordChanged {
                assert!(m.text.contains("15 minutes"), "{kind:?}");
            }
        }
        let m = render(
            MailKind::Invitation,
            "jo@example.com",
            &TemplateContext {
                expires_minutes: Some(7 * 1440),
                recipient_name: None,
                ..ctx("Acme", Some(link))
            },
        );
        assert!(m.text.contains("7 days"));
        assert!(m.text.starts_with("Hello,"));
    }

    #[test]
    fn render_escapes_html_in_interpolated_values() {
        let tenant = r#"<script>alert("x")</script> & 'Co'"#;
        let m = render(
            MailKind::PasswordReset,
            "jo@example.com",
            &TemplateContext {
                tenant_name: tenant,
                recipient_name: Some("<b>Jo</b>"),
                link: Some("https://x.example/?a=\"><img src=x>"),
                expires_minutes: Some(60),
            },
        );
        assert!(!m.html.contains("<script>"));
        assert!(!m.html.contains("<b>Jo"));
        assert!(!m.html.contains("<img"));
        assert!(m
            .html
            .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;Co&#39;"));
        assert!(m.html.contains("Hello &lt;b&gt;Jo&lt;/b&gt;,"));
        // The plain-text version is not HTML and stays readable.
        assert!(m.text.contains(tenant));
        assert!(m.text.contains("1 hour"));

        // A non-web link is shown but never made clickable.
        let m = render(
            MailKind::MagicLink,
            "jo@example.com",
            &ctx("Acme", Some("javascript:alert(1)")),
        );
        assert!(!m.html.contains("href="));
    }

    #[test]
    fn line_breaks_cannot_reach_the_subject() {
        let m = render(
            MailKind::MagicLink,
            "jo@example.com",
            &ctx("Acme\r\nBcc: victim@example.com", None),
        );
        assert!(!m.subject.contains('\n') && !m.subject.contains('\r'));
    }

    #[tokio::test]
    async fn memory_mailer_finds_the_last_link() {
        let mailer = MemoryMailer::new();
        let first = render(
            MailKind::MagicLink,
            "jo@example.com",
            &ctx("Acme", Some("https://id.example.com/a?token=one")),
        );
        let second = render(
            MailKind::PasswordReset,
            "jo@example.com",
            &ctx("Acme", Some("http://localhost:8080/reset?token=two.")),
        );
        let other = render(
            MailKind::MagicLink,
            "sam@example.com",
            &ctx("Acme", Some("https://id.example.com/a?token=three")),
        );
        mailer.send(first).await.unwrap();
        mailer.send(second).await.unwrap();
        mailer.send(other).await.unwrap();
        assert_eq!(mailer.messages().len(), 3);
        assert_eq!(
            mailer.last_link_to("jo@example.com").as_deref(),
            Some("http://localhost:8080/reset?token=two")
        );
        assert_eq!(
            mailer.last_to("jo@example.com").map(|m| m.kind),
            Some(MailKind::PasswordReset)
        );
        assert_eq!(
            mailer.last_link_to("sam@example.com").as_deref(),
            Some("https://id.example.com/a?token=three")
        );
        assert_eq!(mailer.last_link_to("nobody@example.com"), None);

        let changed = render(
            MailKind::PasswordChanged,
            "jo@example.com",
            &ctx("Acme", None),
        );
        mailer.send(changed).await.unwrap();
        assert_eq!(mailer.last_link_to("jo@example.com"), None);

        let bad = render(MailKind::MagicLink, "not an address", &ctx("Acme", None));
        assert!(matches!(mailer.send(bad).await, Err(MailError::Send(_))));

        // Clones share the list.
        let clone = mailer.clone();
        clone.clear();
        assert!(mailer.messages().is_empty());
    }

    #[tokio::test]
    async fn dev_mailer_writes_an_eml_file() {
        let dir = std::env::temp_dir()
            .join(format!("portcullis-mail-{}", uuid::Uuid::now_v7()))
            .join("outbox");
        let mailer = DevMailer::new(dir.clone(), "Portcullis <no-reply@example.com>".into());
        let link = "https://id.example.com/t/acme/verify?token=abc";
        let m = render(
            MailKind::EmailVerification,
            "jo@example.com",
            &ctx("Acme", Some(link)),
        );
        mailer.send(m.clone()).await.unwrap();
        mailer.send(m).await.unwrap();

        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2);
        let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.ends_with("-email_verification-1.eml"), "{name}");
        assert!(files[1]
            .to_str()
            .unwrap()
            .ends_with("-email_verification-2.eml"));
        // They hold sign-in links: readable by this user alone.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for f in &files {
                let mode = std::fs::metadata(f).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", f.display());
            }
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{}", dir.display());
        }

        let eml = std::fs::read_to_string(&files[0]).unwrap();
        // Headers, a blank line, then the body (RFC 5322).
        let (headers, body) = eml.split_once("\r\n\r\n").unwrap();
        let header = |name: &str| {
            headers
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(str::to_owned)
        };
        assert_eq!(header("To").as_deref(), Some("jo@example.com"));
        assert_eq!(
            header("From").as_deref(),
            Some("Portcullis <no-reply@example.com>")
        );
        assert_eq!(
            header("Subject").as_deref(),
            Some("Confirm your email address for Acme")
        );
        assert!(header("Date").is_some());
        assert!(header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"));
        assert!(body.contains("Content-Type: text/plain"));
        assert!(body.contains("Content-Type: text/html"));
        assert!(body.contains(link));
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn smtp_settings_are_checked() {
        let settings = SmtpSettings {
            host: "smtp.example.com".into(),
            port: 465,
            tls: SmtpTls::Required,
            username: Some("portcullis".into()),
            password: Some(SecretString::from("pw".to_owned())),
            from: "Portcullis <no-reply@example.com>".into(),
            timeout: Duration::from_secs(10),
        };
        assert!(SmtpMailer::new(settings.clone()).is_ok());
        assert!(SmtpMailer::new(SmtpSettings {
            tls: SmtpTls::StartTls,
            port: 587,
            ..settings.clone()
        })
        .is_ok());
        assert!(matches!(
            SmtpMailer::new(SmtpSettings {
                from: "not an address".into(),
                ..settings.clone()
            }),
            Err(MailError::Config(_))
        ));
        assert!(matches!(
            SmtpMailer::new(SmtpSettings {
                password: None,
                ..settings.clone()
            }),
            Err(MailError::Config(_))
        ));
        assert!(!format!("{settings:?}").contains("\"pw\""));
    }

    /// What the fake server received.
    #[derive(Debug, Default)]
    struct Received {
        mail_from: String,
        rcpt_to: Vec<String>,
        data: String,
    }

    /// A plain-SMTP server that accepts one connection and records one message.
    async fn fake_smtp_server() -> (u16, tokio::task::JoinHandle<Received>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let mut received = Received::default();
            write
                .write_all(b"220 localhost ESMTP test\r\n")
                .await
                .unwrap();
            while let Some(line) = lines.next_line().await.unwrap() {
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250 localhost\r\n",
                    "MAIL" => {
                        received.mail_from = line[5..].trim().to_owned();
                        b"250 OK\r\n"
                    }
                    "RCPT" => {
                        received.rcpt_to.push(line[5..].trim().to_owned());
                        b"250 OK\r\n"
                    }
                    "DATA" => {
                        write.write_all(b"354 go ahead\r\n").await.unwrap();
                        while let Some(data) = lines.next_line().await.unwrap() {
                            if data == "." {
                                break;
                            }
                            // Undo dot-stuffing.
                            let data = data.strip_prefix('.').unwrap_or(&data);
                            received.data.push_str(data);
                            received.data.push('\n');
                        }
                        b"250 queued\r\n"
                    }
                    "QUIT" => {
                        write.write_all(b"221 bye\r\n").await.unwrap();
                        break;
                    }
                    _ => b"250 OK\r\n",
                };
                write.write_all(reply).await.unwrap();
            }
            received
        });
        (port, handle)
    }

    #[tokio::test]
    async fn smtp_mailer_delivers_to_a_plain_smtp_server() {
        let (port, server) = fake_smtp_server().await;
        let mailer = SmtpMailer::new(SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "Portcullis <no-reply@example.com>".into(),
            timeout: Duration::from_secs(5),
        })
        .unwrap();
        let link = "https://id.example.com/t/acme/magic?token=abc";
        let m = render(
            MailKind::MagicLink,
            "jo@example.com",
            &ctx("Acme", Some(link)),
        );
        mailer.send(m).await.unwrap();

        let received = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert!(
            received.mail_from.contains("<no-reply@example.com>"),
            "{received:?}"
        );
        assert_eq!(received.rcpt_to.len(), 1);
        assert!(
            received.rcpt_to[0].contains("<jo@example.com>"),
            "{received:?}"
        );
        assert!(
            received.data.contains("Subject: Sign in to Acme\n"),
            "{}",
            received.data
        );
        assert!(received.data.contains("To: jo@example.com\n"));
        assert!(received.data.contains(link));
    }

    #[tokio::test]
    async fn smtp_mailer_reports_an_unreachable_server() {
        // Bind then drop a listener to get a port with nothing behind it.
        let port = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let mailer = SmtpMailer::new(SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "no-reply@example.com".into(),
            timeout: Duration::from_secs(2),
        })
        .unwrap();
        let m = render(MailKind::MagicLink, "jo@example.com", &ctx("Acme", None));
        assert!(matches!(mailer.send(m).await, Err(MailError::Send(_))));
    }
}
