//! An SMTP server for the channel tests, on 127.0.0.1:0: it speaks EHLO, STARTTLS (or TLS
//! from the first byte), AUTH PLAIN, MAIL, RCPT, DATA and QUIT, and records each mail whole,
//! so a test can read the envelope, the headers and the body the sink sent.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One mail as received.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    pub auth: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    pub tls: bool,
}

/// An SMTP server on 127.0.0.1:0: offers STARTTLS when given a TLS configuration, takes AUTH
/// PLAIN, answers RCPT with `rcpt_reply`, and records each mail.
#[derive(Clone)]
pub struct SmtpServer {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

/// How an [`SmtpServer`] meets TLS.
pub enum Front {
    /// None at all.
    Plain,
    /// Offered as STARTTLS.
    StartTls(rustls::ServerConfig),
    /// From the first byte.
    Implicit(rustls::ServerConfig),
}

impl SmtpServer {
    /// Starts a server meeting TLS as `front` says and answering RCPT with `rcpt_reply`.
    pub async fn start(front: Front, rcpt_reply: &'static str) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = SmtpServer {
            port: listener.local_addr().expect("addr").port(),
            mails: Arc::default(),
        };
        let (config, implicit) = match front {
            Front::Plain => (None, false),
            Front::StartTls(c) => (Some(c), false),
            Front::Implicit(c) => (Some(c), true),
        };
        let acceptor = config.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        let mails = server.mails.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, mails) = (acceptor.clone(), mails.clone());
                tokio::spawn(async move {
                    let mail = match (acceptor, implicit) {
                        (Some(acceptor), true) => {
                            session_over_tls(acceptor, tcp, true, rcpt_reply).await
                        }
                        (acceptor, _) => session(acceptor, tcp, rcpt_reply).await,
                    };
                    if let Some(mail) = mail.filter(|m| !m.data.is_empty()) {
                        mails.lock().expect("lock").push(mail);
                    }
                });
            }
        });
        server
    }

    /// The mails received so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("lock").clone()
    }
}

/// A plain connection, upgraded when the client asks for STARTTLS and `acceptor` is given.
async fn session(
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    tcp: tokio::net::TcpStream,
    rcpt_reply: &str,
) -> Option<Mail> {
    let mut io = BufReader::new(tcp);
    io.get_mut().write_all(b"220 test ESMTP\r\n").await.ok()?;
    let mut mail = Mail::default();
    let starttls = converse(&mut io, &mut mail, acceptor.is_some(), rcpt_reply).await;
    match (starttls, acceptor) {
        (true, Some(acceptor)) => {
            session_over_tls(acceptor, io.into_inner(), false, rcpt_reply).await
        }
        _ => Some(mail),
    }
}

/// A TLS connection: the handshake, then the greeting (when `greet`) and the conversation.
async fn session_over_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    greet: bool,
    rcpt_reply: &str,
) -> Option<Mail> {
    let mut io = BufReader::new(acceptor.accept(tcp).await.ok()?);
    let mut mail = Mail {
        tls: true,
        ..Mail::default()
    };
    // After STARTTLS the client speaks first (EHLO); a fresh TLS connection is greeted.
    if greet {
        io.get_mut().write_all(b"220 test ESMTP\r\n").await.ok()?;
    }
    converse(&mut io, &mut mail, false, rcpt_reply).await;
    Some(mail)
}

/// One SMTP conversation until QUIT (false) or STARTTLS (true).
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    mail: &mut Mail,
    offer_tls: bool,
    rcpt_reply: &str,
) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await.unwrap_or(0) == 0 {
            return false;
        }
        let command = line.trim_end().to_string();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" if offer_tls => "250-test\r\n250-STARTTLS\r\n250 AUTH PLAIN".to_string(),
            "EHLO" => "250-test\r\n250 AUTH PLAIN".to_string(),
            "STARTTLS" => {
                let _ = io.get_mut().write_all(b"220 go ahead\r\n").await;
                return true;
            }
            "AUTH" => {
                mail.auth = Some(command.clone());
                "235 ok".to_string()
            }
            "MAIL" => {
                mail.from = command.clone();
                "250 ok".to_string()
            }
            "RCPT" => {
                mail.to.push(command.clone());
                rcpt_reply.to_string()
            }
            "DATA" => {
                let _ = io.get_mut().write_all(b"354 go on\r\n").await;
                mail.data = read_data(io).await;
                "250 queued".to_string()
            }
            "QUIT" => {
                let _ = io.get_mut().write_all(b"221 bye\r\n").await;
                return false;
            }
            _ => "250 ok".to_string(),
        };
        if io
            .get_mut()
            .write_all(format!("{reply}\r\n").as_bytes())
            .await
            .is_err()
        {
            return false;
        }
    }
}

/// The mail's lines up to the lone `.`.
async fn read_data<S: AsyncRead + AsyncWrite + Unpin>(io: &mut BufReader<S>) -> String {
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await.unwrap_or(0) == 0 || line == ".\r\n" {
            return data;
        }
        data.push_str(&line);
    }
}
