//! Email through SES v2 or SMTP behind one small interface. Both send the same MIME message
//! (text and HTML alternatives) built by lettre; SES gets it as raw content.

pub mod templates;

use std::time::Duration;

use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::aws::AwsError;
use crate::config::{EmailSettings, EmailTransport, SmtpTls};
use crate::error::JobError;
use crate::message::EmailAddress;
use templates::Rendered;

/// The two real backends.
pub enum Mailer {
    Ses {
        client: aws_sdk_sesv2::Client,
        from: Mailbox,
        configuration_set: Option<String>,
    },
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
}

impl Mailer {
    pub fn new(settings: &EmailSettings, ses: aws_sdk_sesv2::Client) -> Result<Mailer, String> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| format!("email.from: {e}"))?;
        match settings.transport {
            EmailTransport::Ses => Ok(Mailer::Ses {
                client: ses,
                from,
                configuration_set: settings.ses.configuration_set.clone(),
            }),
            EmailTransport::Smtp => {
                let s = &settings.smtp;
                let tls = match s.tls {
                    SmtpTls::None => Tls::None,
                    SmtpTls::Starttls => Tls::Required(
                        TlsParameters::new(s.host.clone())
                            .map_err(|e| format!("email.smtp: {e}"))?,
                    ),
                    SmtpTls::Implicit => Tls::Wrapper(
                        TlsParameters::new(s.host.clone())
                            .map_err(|e| format!("email.smtp: {e}"))?,
                    ),
                };
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
                    .port(s.port)
                    .tls(tls)
                    .timeout(Some(Duration::from_secs(s.timeout_secs)));
                if let (Some(user), Some(password)) = (&s.username, &s.password) {
                    builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
                }
                Ok(Mailer::Smtp {
                    transport: builder.build(),
                    from,
                })
            }
        }
    }

    pub fn transport_name(&self) -> &'static str {
        match self {
            Mailer::Ses { .. } => "ses",
            Mailer::Smtp { .. } => "smtp",
        }
    }

    /// Sends one message to `to`; returns the provider's message id when it gives one.
    /// `id` names the message (`<id@sender-domain>` as its Message-ID): the same id for a
    /// resend of the same message, so a resend after a crash is recognisable as one.
    pub async fn send(
        &self,
        to: &[EmailAddress],
        email: &Rendered,
        id: &str,
    ) -> Result<Option<String>, JobError> {
        let from = match self {
            Mailer::Ses { from, .. } | Mailer::Smtp { from, .. } => from.clone(),
        };
        let message_id = format!("<{id}@{}>", from.email.domain());
        let message = build_message(from, to, email, message_id)?;
        match self {
            Mailer::Ses {
                client,
                configuration_set,
                ..
            } => {
                let destination = Destination::builder()
                    .set_to_addresses(Some(to.iter().map(ToString::to_string).collect()))
                    .build();
                let raw = RawMessage::builder()
                    .data(Blob::new(message.formatted()))
                    .build()
                    .map_err(|e| JobError::Email {
                        message: e.to_string(),
                        transient: false,
                    })?;
                let out = client
                    .send_email()
                    .destination(destination)
                    .content(EmailContent::builder().raw(raw).build())
                    .set_configuration_set_name(configuration_set.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        let e = AwsError::from_sdk("sesv2", "SendEmail", e);
                        JobError::Email {
                            transient: e.transient,
                            message: e.to_string(),
                        }
                    })?;
                Ok(out.message_id)
            }
            Mailer::Smtp { transport, .. } => {
                let response = transport.send(message).await.map_err(|e| JobError::Email {
                    // 4xx replies, timeouts and connection failures can pass; 5xx will not.
                    transient: !e.is_permanent(),
                    message: e.to_string(),
                })?;
                Ok(response.message().next().map(str::to_string))
            }
        }
    }

    /// Checks that the transport can be reached (and logged in to), for `check`.
    pub async fn probe(&self) -> Result<(), String> {
        match self {
            Mailer::Ses { .. } => Ok(()),
            Mailer::Smtp { transport, .. } => match transport.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => Err("the SMTP server did not accept the connection".into()),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

fn build_message(
    from: Mailbox,
    to: &[EmailAddress],
    email: &Rendered,
    message_id: String,
) -> Result<Message, JobError> {
    let mut builder = Message::builder()
        .from(from)
        .subject(&email.subject)
        .message_id(Some(message_id));
    for address in to {
        builder = builder.to(Mailbox::new(None, address.address().clone()));
    }
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(email.text.clone());
    let result = match &email.html {
        Some(html) => builder.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html.clone()),
            ),
        ),
        None => builder.singlepart(text),
    };
    result.map_err(|e| JobError::Email {
        message: format!("building the message failed: {e}"),
        transient: false,
    })
}
