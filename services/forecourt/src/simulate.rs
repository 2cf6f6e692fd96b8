//! `forecourt sim`: the outside payment parties' simulators as standalone HTTP servers, for a
//! demo or a till developer's machine. Each start makes fresh keys and writes the halves the
//! merchant side needs (merchant private keys, the parties' public keys) as PEM files.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub struct SimArgs {
    /// Address of the WeChat Pay API v3 simulator.
    #[arg(long, default_value = "127.0.0.1:7701")]
    wechat: SocketAddr,
    /// Address of the Alipay gateway simulator (`/gateway.do`).
    #[arg(long, default_value = "127.0.0.1:7702")]
    alipay: SocketAddr,
    /// Address of the card acquirer simulator.
    #[arg(long, default_value = "127.0.0.1:7703")]
    acquirer: SocketAddr,
    /// Where to write the keys the merchant side needs.
    #[arg(long, default_value = "data/sim-keys")]
    keys_dir: PathBuf,
    /// WeChat Pay's APIv3 key (32 characters) for encrypted notifications.
    #[arg(long, default_value = "forecourt-sim-apiv3-key-32-bytes")]
    api_v3_key: String,
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let api_v3_key: [u8; 32] = args
        .api_v3_key
        .as_bytes()
        .try_into()
        .context("--api-v3-key must be exactly 32 bytes")?;
    std::fs::create_dir_all(&args.keys_dir)
        .with_context(|| format!("creating {}", args.keys_dir.display()))?;
    let write = |name: &str, pem: Vec<u8>| -> anyhow::Result<()> {
        let path = args.keys_dir.join(name);
        std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))
    };

    let (wx_merchant, wx_merchant_public) = sim::keys::rsa_pair();
    let (wx_platform, wx_platform_public) = sim::keys::rsa_pair();
    write(
        "wechat-merchant-key.pem",
        wx_merchant.private_key_to_pem_pkcs8()?,
    )?;
    write(
        "wechat-platform-public.pem",
        wx_platform_public.public_key_to_pem()?,
    )?;
    let wechat = sim::wechat::start(
        sim::wechat::WechatSimConfig {
            mchid: "1900000001".into(),
            appid: "wx8888888888888888".into(),
            merchant_serial_no: "SIM-MERCHANT-SERIAL".into(),
            merchant_public_key: wx_merchant_public,
            platform_serial_no: "PUB_KEY_ID_SIM".into(),
            platform_key: wx_platform,
            api_v3_key,
            fee_rate_bp: 38,
        },
        args.wechat,
    )
    .await
    .context("starting the WeChat Pay simulator")?;

    let (ali_app, ali_app_public) = sim::keys::rsa_pair();
    let (ali_platform, ali_platform_public) = sim::keys::rsa_pair();
    write("alipay-app-key.pem", ali_app.private_key_to_pem_pkcs8()?)?;
    write(
        "alipay-public.pem",
        ali_platform_public.public_key_to_pem()?,
    )?;
    let alipay = sim::alipay::start(
        sim::alipay::AlipaySimConfig {
            app_id: "2021000000000001".into(),
            app_public_key: ali_app_public,
            alipay_key: ali_platform,
            fee_rate_bp: 38,
        },
        args.alipay,
    )
    .await
    .context("starting the Alipay simulator")?;

    let (acq_merchant, acq_merchant_public) = sim::keys::rsa_pair();
    let (acq_key, acq_public) = sim::keys::rsa_pair();
    write(
        "acquirer-merchant-key.pem",
        acq_merchant.private_key_to_pem_pkcs8()?,
    )?;
    write("acquirer-public.pem", acq_public.public_key_to_pem()?)?;
    let acquirer = sim::acquirer::start(
        sim::acquirer::AcquirerSimConfig {
            merchant_id: "M-SIM-0001".into(),
            merchant_public_key: acq_merchant_public,
            acquirer_key: acq_key,
            fee_rate_bp: 50,
        },
        args.acquirer,
    )
    .await
    .context("starting the acquirer simulator")?;

    println!(
        "WeChat Pay v3  {}  mchid 1900000001, merchant serial SIM-MERCHANT-SERIAL, platform key id PUB_KEY_ID_SIM",
        wechat.base_url()
    );
    println!(
        "Alipay         {}/gateway.do  app_id 2021000000000001",
        alipay.base_url()
    );
    println!(
        "Acquirer       {}  merchant M-SIM-0001",
        acquirer.base_url()
    );
    println!("keys in {}; Ctrl-C to stop", args.keys_dir.display());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
