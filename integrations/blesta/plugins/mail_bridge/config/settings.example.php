<?php
/**
 * Mail Bridge plugin settings. Copy to settings.php in this folder (readable by the web server
 * user only: chmod 600) or point the MAILBRIDGE_BLESTA_SETTINGS environment variable at a copy
 * outside the web root.
 */
return [
    // The bridge's intake for this Blesta installation: https://<bridge host>/hooks/<source>
    'url' => 'https://bridge.example.org/hooks/blesta',
    // The source's Standard Webhooks secret (sources.blesta.secrets in the bridge's config).
    'secret' => 'whsec_REPLACE_WITH_THE_SECRET_FROM_THE_BRIDGE_CONFIG',
    // Package ids whose services are mail services. Empty: every package.
    'package_ids' => [],
    // Events the bridge could not be reached for wait here (one JSON file each) until the
    // plugin's cron task sends them. Keep it outside the web root.
    'outbox_dir' => __DIR__ . '/../outbox',
];
