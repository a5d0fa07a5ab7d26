<?php
/**
 * mailbridge: WHMCS server module that forwards every module command to the mail bridge.
 *
 * Install: copy modules/servers/mailbridge/ (this file, mailbridge_lib.php, hooks.php and
 * templates/) into WHMCS's modules/servers/; WHMCS loads hooks.php itself. Server entry:
 * Hostname = the bridge's host name (a path prefix is allowed, e.g. bridge.example.org/mb),
 * "Secure" ticked (HTTPS, certificate always verified), Port optional, Username = the bridge's
 * source name (default "whmcs"), Password (or Access Hash) = the source's whsec_ secret.
 * See docs/connect-whmcs.md in the mailbridge repository.
 *
 * Each command posts {"event", "occurred_at", "params"} (the envelope described in the
 * repository's docs/design.md#whmcs-envelope) signed with Standard Webhooks. "success" only
 * when the bridge answers HTTP 200 "applied"; anything else is a readable error, so WHMCS
 * shows it and keeps automated actions in its Module Queue. Renew is the exception: the
 * bridge changes nothing on a renewal, so it is reported best-effort and never fails.
 *
 * Of the client's details only email, firstname, lastname and companyname are sent.
 */

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

require_once __DIR__ . '/mailbridge_lib.php';

function mailbridge_MetaData()
{
    return [
        'DisplayName' => 'Mail Bridge (Mailcheap NMS)',
        'APIVersion' => '1.1',
        'RequiresServer' => true,
        'DefaultSSLPort' => '443',
        // Server Sync (https://developers.whmcs.com/provisioning-modules/server-sync/): the
        // DomainAdmin's username identifies an account, its tier is the product's Tier key.
        'ListAccountsUniqueIdentifierDisplayName' => 'Username',
        'ListAccountsUniqueIdentifierField' => 'username',
        'ListAccountsProductField' => 'configoption1',
    ];
}

/**
 * Product module settings. configoption1 = the bridge's tier key (wins over the bridge's
 * `products:` mapping when set), offered as a dropdown filled from the bridge's tiers by
 * mailbridge_TierLoader (https://developers.whmcs.com/provisioning-modules/loader-functions/).
 * Add-ons are Configurable Options on the product, named `<addon key>|<label>`, e.g.
 * `extra_mailboxes|Extra mailboxes` (quantity type); the key before the pipe must match an
 * entry under `addons.<source>` in the bridge's config.
 */
function mailbridge_ConfigOptions()
{
    return [
        'Tier key' => [
            'Type' => 'text',
            'Size' => '25',
            'Default' => '',
            'Loader' => 'mailbridge_TierLoader',
            'SimpleMode' => true,
            'Description' => 'A tier of the bridge (the list comes from the bridge). Empty: the '
                . 'bridge maps this product id. Add-ons: Configurable Options named like '
                . 'extra_mailboxes|Extra mailboxes.',
        ],
    ];
}

/** One line describing a tier's bundle, e.g. "1 domain, 5 mailboxes, 5120 MB". */
function mailbridge_bundle_text(array $bundle): string
{
    $names = [
        'domains' => 'domains', 'domain_aliases' => 'domain aliases', 'aliases' => 'aliases',
        'mailboxes' => 'mailboxes', 'storage_mb' => 'MB',
    ];
    $parts = [];
    foreach ($names as $key => $name) {
        if (array_key_exists($key, $bundle) && is_scalar($bundle[$key])) {
            $parts[] = $bundle[$key] . ' ' . $name;
        }
    }
    return implode(', ', $parts);
}

/**
 * Loader of the "Tier key" dropdown: the bridge's tiers as key => "label (bundle)", the empty
 * key for "use the bridge's product mapping". A saved key the bridge no longer has stays in
 * the list, marked, so it is seen rather than silently replaced. Throws on any failure:
 * WHMCS shows the exception's message on the product's Module Settings.
 *
 * @throws Exception
 */
function mailbridge_TierLoader($params = [])
{
    $params = is_array($params) ? $params : [];
    try {
        $client = MailBridgeClient::fromParams($params);
        $tiers = $client->tiers()['tiers'];
    } catch (MailBridgeConfigError $e) {
        throw new Exception('Mail bridge: ' . $e->getMessage()
            . ' (the list comes from the first server of the product\'s server group)');
    }
    $list = ['' => '(none: use the bridge\'s product mapping)'];
    foreach ($tiers as $key => $tier) {
        $label = is_scalar($tier['label'] ?? null) && (string) $tier['label'] !== '' ? (string) $tier['label'] : $key;
        $bundle = is_array($tier['bundle'] ?? null) ? mailbridge_bundle_text($tier['bundle']) : '';
        $list[$key] = $label . ($label !== $key ? ' [' . $key . ']' : '') . ($bundle !== '' ? ' (' . $bundle . ')' : '');
    }
    $saved = trim((string) ($params['configoption1'] ?? ''));
    if ($saved !== '' && !isset($tiers[$saved])) {
        $list[$saved] = $saved . ': NOT a tier of the bridge, choose another (creates and package '
            . 'changes fail with unknown_tier)';
    }
    return $list;
}

/**
 * Why the product's Tier key (configoption1) would fail, or null when it is empty or a tier
 * of the bridge. $tiers is the key => row map from MailBridgeClient::tiers().
 */
function mailbridge_stale_tier(array $params, array $tiers): ?string
{
    $saved = trim((string) ($params['configoption1'] ?? ''));
    if ($saved === '' || isset($tiers[$saved])) {
        return null;
    }
    $known = array_keys($tiers);
    return 'The product\'s Tier key "' . $saved . '" is not a tier of the bridge'
        . ($known ? ' (its tiers: ' . implode(', ', $known) . ')' : '')
        . ', so creates and package changes fail with unknown_tier. Choose a tier in the '
        . 'product\'s Module Settings, or clear it to use the bridge\'s product mapping.';
}

/** The service's properties (WHMCS 7.2+), or null where WHMCS passes no model. */
function mailbridge_properties(array $params)
{
    $model = $params['model'] ?? null;
    if (is_object($model) && isset($model->serviceProperties) && is_object($model->serviceProperties)) {
        return $model->serviceProperties;
    }
    return null;
}

function mailbridge_property_get(array $params, string $name): string
{
    $props = mailbridge_properties($params);
    if ($props === null) {
        return '';
    }
    try {
        return (string) $props->get($name);
    } catch (Throwable $e) {
        return '';
    }
}

function mailbridge_property_save(array $params, array $values): void
{
    $props = mailbridge_properties($params);
    if ($props === null) {
        return;
    }
    try {
        $props->save($values);
    } catch (Throwable $e) {
        // Bookkeeping only: a failed save costs at most a new webhook-id on the next retry.
    }
}

/** Values the WHMCS module log must mask: the secret, and the password as sent. */
function mailbridge_mask_vars(MailBridgeClient $client, array $params, string $function): array
{
    $mask = $client->secrets();
    if (in_array($function, MailBridgeClient::SENDS_PASSWORD, true) && isset($params['password'])
        && (string) $params['password'] !== '') {
        $password = (string) $params['password'];
        $mask[] = $password;
        $mask[] = substr(json_encode($password, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), 1, -1);
        $mask[] = substr(json_encode($password), 1, -1);
    }
    return array_values(array_unique(array_filter($mask, 'strlen')));
}

function mailbridge_log(string $action, string $request, array $response, $processed, array $mask): void
{
    if (!function_exists('logModuleCall')) {
        return;
    }
    logModuleCall(
        'mailbridge',
        $action,
        $request,
        'HTTP ' . $response['http'] . ($response['curl_errno'] ? ' curl ' . $response['curl_error'] : '')
            . "\n" . $response['raw'],
        $processed,
        $mask
    );
}

/**
 * Send one lifecycle event. The webhook-id and occurred_at of the previous call are reused
 * only when the same function with the same params is retried after it did not succeed
 * (WHMCS's Module Queue retry), so the bridge sees a repeat of the same delivery; any other
 * call gets a new id and the current time.
 */
function mailbridge_command(
    string $function,
    array $params,
    array $extra = [],
    int $timeout = MailBridgeClient::TIMEOUT_S
): string {
    try {
        $client = MailBridgeClient::fromParams($params);
    } catch (MailBridgeConfigError $e) {
        return 'Mail bridge: ' . $e->getMessage();
    }
    if (!in_array($function, ['MoveService', 'CreateAccount'], true)) {
        $moved = mailbridge_report_move($params);
        if ($moved !== null && $moved !== 'success') {
            return $moved;
        }
    }
    try {
        $send = MailBridgeClient::paramsToSend($function, $params);
        foreach ($extra as $key => $value) {
            $send[$key] = $value;
        }
        $paramsJson = MailBridgeClient::canonicalJson($send);
    } catch (MailBridgeConfigError $e) {
        return 'Mail bridge: ' . $e->getMessage();
    }
    $hash = $client->digest($function . "\n" . $paramsJson);
    $last = json_decode(mailbridge_property_get($params, MailBridgeClient::PROP_LAST_CALL), true);
    if (is_array($last) && ($last['function'] ?? '') === $function && ($last['hash'] ?? '') === $hash
        && empty($last['ok']) && !empty($last['id']) && !empty($last['at'])) {
        $webhookId = (string) $last['id'];
        $occurredAt = (string) $last['at'];
    } else {
        $webhookId = MailBridgeClient::newWebhookId();
        $occurredAt = MailBridgeClient::nowIso();
    }
    $record = ['function' => $function, 'hash' => $hash, 'id' => $webhookId, 'at' => $occurredAt, 'ok' => false];
    // Saved before sending: a request that dies half-way is retried with the same id.
    mailbridge_property_save($params, [MailBridgeClient::PROP_LAST_CALL => json_encode($record)]);

    $body = MailBridgeClient::canonicalJson(['event' => $function, 'occurred_at' => $occurredAt, 'params' => $send]);
    $path = '/hooks/' . $client->source();
    $response = $client->post($path, $body, $webhookId, $timeout);
    [$ok, $message] = MailBridgeClient::outcome($response);
    mailbridge_log(
        $function,
        'POST ' . $response['url'] . "\nwebhook-id: " . $webhookId . "\n\n" . $body,
        $response,
        $response['json'] ?? $message,
        mailbridge_mask_vars($client, $params, $function)
    );
    if ($ok) {
        $record['ok'] = true;
        $values = [MailBridgeClient::PROP_LAST_CALL => json_encode($record)];
        if (!empty($params['userid'])) {
            $values[MailBridgeClient::PROP_OWNER] = (string) $params['userid'];
        }
        mailbridge_property_save($params, $values);
        return 'success';
    }
    return $message;
}

/**
 * Tell the bridge the service now belongs to another client, when the owner it last reported
 * differs from $params['userid']. Null when there is nothing to report.
 */
function mailbridge_report_move(array $params): ?string
{
    $previous = mailbridge_property_get($params, MailBridgeClient::PROP_OWNER);
    $current = (string) ($params['userid'] ?? '');
    if ($previous === '' || $current === '' || (int) $previous === (int) $current || (int) $previous < 1) {
        return null;
    }
    return mailbridge_command('MoveService', $params, ['previous_userid' => (int) $previous]);
}

/**
 * Save a password on the service through WHMCS's documented local API UpdateClientProduct
 * (serviceid, servicepassword). It takes the plain password: WHMCS stores it the way it
 * stores every service password, so no encrypt() here. Null when saved, else why not.
 */
function mailbridge_save_service_password(array $params, string $password): ?string
{
    $serviceId = (int) ($params['serviceid'] ?? 0);
    if ($serviceId < 1) {
        return 'no service id was passed';
    }
    if (!function_exists('localAPI')) {
        return 'the WHMCS local API is not available';
    }
    try {
        $result = localAPI('UpdateClientProduct', ['serviceid' => $serviceId, 'servicepassword' => $password]);
    } catch (Throwable $e) {
        return $e->getMessage();
    }
    if (is_array($result) && ($result['result'] ?? '') === 'success') {
        return null;
    }
    $why = is_array($result) ? (string) ($result['message'] ?? '') : '';
    return $why !== '' ? $why : 'no answer';
}

/**
 * Create. WHMCS generates 10-character service passwords by default, which the mail server
 * refuses (it needs 12 characters with an upper-case letter, a lower-case letter and a
 * digit). When $params['password'] breaks that policy, a compliant 16-character password is
 * generated and saved to the service first, then sent: a Module Queue retry then sends the
 * same password again (and reuses the delivery), and the welcome e-mail's
 * {$service_password} shows the password that works. Nothing is sent if it cannot be saved.
 */
function mailbridge_CreateAccount(array $params)
{
    if (!MailBridgeClient::passwordMeetsPolicy($params['password'] ?? '')) {
        $password = MailBridgeClient::generatePassword();
        $failed = mailbridge_save_service_password($params, $password);
        if ($failed !== null) {
            return 'Mail bridge: the service password does not meet the mail server\'s policy and '
                . 'a new one could not be saved to the service (' . $failed . '). Set a password '
                . 'of at least 12 characters with an upper-case letter, a lower-case letter and '
                . 'a digit on the service, then create it again.';
        }
        $params['password'] = $password;
    }
    return mailbridge_command('CreateAccount', $params);
}

function mailbridge_SuspendAccount(array $params)
{
    return mailbridge_command('SuspendAccount', $params);
}

function mailbridge_UnsuspendAccount(array $params)
{
    return mailbridge_command('UnsuspendAccount', $params);
}

function mailbridge_TerminateAccount(array $params)
{
    return mailbridge_command('TerminateAccount', $params);
}

function mailbridge_ChangePackage(array $params)
{
    return mailbridge_command('ChangePackage', $params);
}

/** Change Password: a password the mail server would refuse is refused here, unsent. */
function mailbridge_ChangePassword(array $params)
{
    if (!MailBridgeClient::passwordMeetsPolicy($params['password'] ?? '')) {
        return MailBridgeClient::PASSWORD_RULE;
    }
    return mailbridge_command('ChangePassword', $params);
}

/**
 * Renew: the bridge records it and changes nothing on the mail server, so a renewal never
 * fails for WHMCS (no Module Queue item, no failed-action e-mail). It is still sent, with the
 * shorter read timeout; an undelivered one is noted in the activity log and the module log.
 */
function mailbridge_Renew(array $params)
{
    try {
        $outcome = mailbridge_command('Renew', $params, [], MailBridgeClient::READ_TIMEOUT_S);
    } catch (Throwable $e) {
        $outcome = $e->getMessage();
    }
    if ($outcome !== 'success' && function_exists('logActivity')) {
        try {
            logActivity('Mail bridge: the renewal of service #' . (int) ($params['serviceid'] ?? 0)
                . ' was not recorded by the bridge (nothing on the mail server depends on it): ' . $outcome);
        } catch (Throwable $e) {
            // best-effort only
        }
    }
    return 'success';
}

function mailbridge_AdminCustomButtonArray()
{
    return [
        'Transfer mail ownership' => 'TransferOwnership',
        'Report client change' => 'MoveService',
    ];
}

/**
 * Admin button "Transfer mail ownership": hands everything this service's DomainAdmin owns
 * (domains, their mailboxes, aliases and used quota) to the DomainAdmin of another service.
 * The target service id comes from the product custom field `mailbridge_transfer_to`
 * (admin-only text field; `mailbridge_transfer_to|Transfer mail to service #` works too).
 */
function mailbridge_TransferOwnership(array $params)
{
    $target = '';
    foreach ((array) ($params['customfields'] ?? []) as $name => $value) {
        if (trim(explode('|', (string) $name, 2)[0]) === 'mailbridge_transfer_to') {
            $target = trim((string) $value);
        }
    }
    $target = ltrim($target, '#');
    if ($target === '' || !ctype_digit($target) || (int) $target < 1) {
        return 'Mail bridge: enter the target service ID (a number) in the custom field '
            . '"mailbridge_transfer_to" of this service, save, then press the button again';
    }
    if ((int) $target === (int) ($params['serviceid'] ?? 0)) {
        return 'Mail bridge: the target service must be another service, not this one';
    }
    return mailbridge_command('TransferOwnership', $params, ['target_serviceid' => (int) $target]);
}

/**
 * "Report client change" (also run by the module's hooks.php through the ModuleCustom API):
 * sends MoveService when the service's client differs from the one the bridge last heard of.
 */
function mailbridge_MoveService(array $params)
{
    $previous = mailbridge_property_get($params, MailBridgeClient::PROP_OWNER);
    if ($previous === '') {
        return 'Mail bridge: nothing to report: no earlier client is on record for this service '
            . '(it is recorded on each successful module command)';
    }
    if ((int) $previous === (int) ($params['userid'] ?? 0)) {
        return 'Mail bridge: nothing to report: the bridge already has client #' . (int) $previous
            . ' as the owner';
    }
    return mailbridge_report_move($params) ?? 'success';
}

function mailbridge_TestConnection(array $params)
{
    try {
        $client = MailBridgeClient::fromParams($params);
    } catch (MailBridgeConfigError $e) {
        return ['success' => false, 'error' => 'Mail bridge: ' . $e->getMessage()];
    }
    $response = $client->post(
        '/hooks/' . $client->source() . '/status',
        '{}',
        MailBridgeClient::newWebhookId(),
        MailBridgeClient::READ_TIMEOUT_S
    );
    $json = $response['json'];
    mailbridge_log('TestConnection', 'POST ' . $response['url'] . "\n\n{}", $response, $json, $client->secrets());
    if ($response['http'] === 200 && is_array($json) && ($json['status'] ?? '') === 'ok') {
        return ['success' => true, 'error' => ''];
    }
    if ($response['http'] === 0) {
        return ['success' => false, 'error' => MailBridgeClient::transportError($response)];
    }
    if (is_array($json) && $response['http'] === 503 && isset($json['error'])) {
        return ['success' => false, 'error' => 'Mail bridge: ' . $json['error'] . ': ' . ($json['message'] ?? '')];
    }
    return ['success' => false, 'error' => MailBridgeClient::httpError($response)];
}

/**
 * The bridge's view of this service (state, bundle, last event, set-up details), or an
 * ['error' => text] array.
 */
function mailbridge_service_info(array $params): array
{
    try {
        $client = MailBridgeClient::fromParams($params);
        $body = MailBridgeClient::canonicalJson(['service' => (int) ($params['serviceid'] ?? 0)]);
    } catch (MailBridgeConfigError $e) {
        return ['error' => $e->getMessage(), 'client' => null];
    }
    $response = $client->post(
        '/hooks/' . $client->source() . '/service',
        $body,
        MailBridgeClient::newWebhookId(),
        MailBridgeClient::READ_TIMEOUT_S
    );
    $json = $response['json'];
    if ($response['http'] === 200 && is_array($json)) {
        return ['info' => $json, 'client' => $client];
    }
    if ($response['http'] === 404 && is_array($json) && ($json['error'] ?? '') === 'unknown_service') {
        return ['missing' => true, 'client' => $client];
    }
    $error = $response['http'] === 0
        ? MailBridgeClient::transportError($response)
        : MailBridgeClient::httpError($response);
    return ['error' => $error, 'client' => $client];
}

function mailbridge_h($value): string
{
    return htmlspecialchars((string) $value, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

/** Flat client-area variables (raw values; templates escape them). */
function mailbridge_setup_vars(array $info): array
{
    $setup = is_array($info['setup'] ?? null) ? $info['setup'] : [];
    $mx = [];
    foreach ((array) ($setup['mx'] ?? []) as $record) {
        if (is_array($record) && isset($record['host'])) {
            $mx[] = ['host' => (string) $record['host'], 'priority' => (int) ($record['priority'] ?? 10)];
        }
    }
    return [
        'state' => (string) ($info['state'] ?? ''),
        'in_sync' => !empty($info['in_sync']),
        'username' => (string) ($setup['username'] ?? ($info['username'] ?? '')),
        'domain' => (string) ($info['domain'] ?? ''),
        'mail_hostname' => (string) ($setup['mail_hostname'] ?? ''),
        'webmail_url' => (string) ($setup['webmail_url'] ?? ''),
        'admin_url' => (string) ($setup['admin_url'] ?? ''),
        'mx' => $mx,
        'backup_mx' => array_map('strval', (array) ($setup['backup_mx'] ?? [])),
        'spf' => (string) ($setup['spf'] ?? ''),
        'bundle' => is_array($info['bundle'] ?? null) ? $info['bundle'] : [],
    ];
}

/** The client-area panel as escaped HTML. */
function mailbridge_client_html(array $vars): string
{
    $rows = [
        'Status' => $vars['state'] === 'active' ? 'Active' : ucfirst($vars['state']),
        'Username' => $vars['username'],
        'Mail server' => $vars['mail_hostname'],
    ];
    $html = '<div class="mailbridge-panel"><table class="table table-striped">';
    foreach ($rows as $label => $value) {
        if ($value !== '') {
            $html .= '<tr><th>' . mailbridge_h($label) . '</th><td>' . mailbridge_h($value) . '</td></tr>';
        }
    }
    foreach (['Webmail' => $vars['webmail_url'], 'Mail admin panel' => $vars['admin_url']] as $label => $url) {
        if ($url !== '' && preg_match('#^https?://#i', $url)) {
            $html .= '<tr><th>' . mailbridge_h($label) . '</th><td><a href="' . mailbridge_h($url)
                . '" target="_blank" rel="noopener">' . mailbridge_h($url) . '</a></td></tr>';
        }
    }
    if ($vars['mx']) {
        $items = array_map(function ($mx) {
            return mailbridge_h($mx['priority'] . ' ' . $mx['host']);
        }, $vars['mx']);
        $html .= '<tr><th>MX records</th><td>' . implode('<br>', $items) . '</td></tr>';
    }
    if ($vars['spf'] !== '') {
        $html .= '<tr><th>SPF record (TXT)</th><td><code>' . mailbridge_h($vars['spf']) . '</code></td></tr>';
    }
    $html .= '</table></div>';
    return $html;
}

/**
 * Client area: returns the template with the set-up details as variables
 * ({$mailbridge.mail_hostname}, {$mailbridge.webmail_url}, {$mailbridge.mx}, ...), plus the
 * ready escaped panel as {$mailbridge_panel}.
 */
function mailbridge_ClientArea(array $params)
{
    $result = mailbridge_service_info($params);
    if (isset($result['info'])) {
        $vars = mailbridge_setup_vars($result['info']);
        $panel = mailbridge_client_html($vars);
        $notice = '';
    } else {
        $vars = mailbridge_setup_vars([]);
        $panel = '';
        $notice = isset($result['missing'])
            ? 'Your mail account is being set up.'
            : 'Mail account details are unavailable right now. Please try again later.';
    }
    return [
        'templatefile' => 'templates/clientarea',
        'vars' => [
            'mailbridge' => $vars,
            'mailbridge_panel' => $panel,
            'mailbridge_notice' => $notice,
        ],
    ];
}

/** Admin service tab: the bridge's state, the last event and a link to its event log. */
function mailbridge_AdminServicesTabFields(array $params)
{
    $result = mailbridge_service_info($params);
    $client = $result['client'] ?? null;
    $fields = [];
    if (isset($result['info'])) {
        $info = $result['info'];
        $state = (string) ($info['state'] ?? 'unknown');
        $sync = !empty($info['in_sync']) ? 'in sync with the mail server' : 'not yet applied on the mail server';
        $bundle = [];
        foreach ((array) ($info['bundle'] ?? []) as $name => $value) {
            $bundle[] = mailbridge_h($name . ' ' . (is_scalar($value) ? $value : json_encode($value)));
        }
        $fields['Mail bridge state'] = '<strong>' . mailbridge_h($state) . '</strong>, ' . mailbridge_h($sync)
            . ($bundle ? '<br><small>' . implode(', ', $bundle) . '</small>' : '');
        $last = $info['last_event'] ?? null;
        if (is_array($last)) {
            $text = '#' . ($last['id'] ?? '?') . ' ' . ($last['action'] ?? '') . ': ' . ($last['status'] ?? '');
            if (!empty($last['reason'])) {
                $text .= ' (' . $last['reason'] . ')';
            }
            if (!empty($last['message'])) {
                $text .= ' ' . $last['message'];
            }
            $fields['Last bridge event'] = mailbridge_h($text);
        }
    } elseif (isset($result['missing'])) {
        $fields['Mail bridge state'] = mailbridge_h('not known to the mail bridge yet (no module command sent)');
    } else {
        $fields['Mail bridge state'] = '<span class="text-danger">' . mailbridge_h($result['error'] ?? 'unavailable') . '</span>';
    }
    if ($client instanceof MailBridgeClient) {
        $url = $client->baseUrl() . '/admin/events?source=' . rawurlencode($client->source())
            . '&service=' . rawurlencode((string) ($params['serviceid'] ?? ''));
        $fields['Bridge event log'] = '<a href="' . mailbridge_h($url) . '" target="_blank" rel="noopener">'
            . mailbridge_h('Events of this service on the mail bridge') . '</a>';
        if (trim((string) ($params['configoption1'] ?? '')) !== '') {
            try {
                $stale = mailbridge_stale_tier($params, $client->tiers()['tiers']);
                if ($stale !== null) {
                    $fields['Tier key'] = '<span class="text-danger">' . mailbridge_h($stale) . '</span>';
                }
            } catch (MailBridgeConfigError $e) {
                $fields['Tier key'] = mailbridge_h('not checked: ' . $e->getMessage());
            }
        }
    }
    return $fields;
}

/** Services per usage page; MAILBRIDGE_USAGE_PAGE (1 to 500) makes it smaller. */
function mailbridge_usage_page(): int
{
    $size = defined('MAILBRIDGE_USAGE_PAGE') ? (int) constant('MAILBRIDGE_USAGE_PAGE') : MailBridgeClient::USAGE_PAGE;
    return max(1, min(MailBridgeClient::USAGE_PAGE, $size));
}

/** WHMCS's service status for a bridge state (Server Sync knows Active and Suspended only). */
function mailbridge_sync_status(string $state): ?string
{
    $map = ['active' => 'ACTIVE', 'suspended' => 'SUSPENDED'];
    if (!isset($map[$state])) {
        return null;
    }
    $class = 'WHMCS\\Service\\Status';
    return class_exists($class) ? constant($class . '::' . $map[$state]) : ucfirst($state);
}

/**
 * Server Sync (System Settings > Servers > Sync Accounts): every DomainAdmin the bridge
 * provisioned for this source, active or suspended, identified by username, with its tier as
 * the product (matched against the products' Tier key). The bridge's usage endpoint lists
 * them; it has no client e-mail, domain, IP or creation date to offer.
 */
function mailbridge_ListAccounts(array $params)
{
    $accounts = [];
    try {
        $client = MailBridgeClient::fromParams($params);
        $client->eachUsage(function (array $row) use (&$accounts) {
            $username = is_scalar($row['username'] ?? null) ? (string) $row['username'] : '';
            $status = mailbridge_sync_status((string) ($row['state'] ?? ''));
            if ($username === '' || $status === null) {
                return;
            }
            $accounts[] = [
                'email' => '',
                'username' => $username,
                'domain' => '',
                'uniqueIdentifier' => $username,
                'product' => is_scalar($row['tier'] ?? null) ? (string) $row['tier'] : '',
                'primaryip' => '',
                'created' => '',
                'status' => $status,
            ];
        }, mailbridge_usage_page());
    } catch (MailBridgeConfigError $e) {
        return ['success' => false, 'error' => 'Mail bridge: ' . $e->getMessage()];
    }
    return ['success' => true, 'accounts' => $accounts];
}

/**
 * The tblhosting columns one usage row sets, or null when the bridge has not read the
 * account's usage yet (nothing is written then, rather than a false zero). Disk figures are
 * in MB, as WHMCS shows and bills them; lastupdate is when the bridge read them.
 */
function mailbridge_usage_columns(array $row): ?array
{
    $used = $row['storage_used_mb'] ?? null;
    $readAt = $row['read_at'] ?? null;
    if (!is_numeric($used) || !is_string($readAt) || $readAt === '') {
        return null;
    }
    try {
        $when = new DateTime($readAt);
    } catch (Exception $e) {
        return null;
    }
    $when->setTimezone(new DateTimeZone(date_default_timezone_get()));
    $columns = ['diskusage' => (int) round((float) $used), 'lastupdate' => $when->format('Y-m-d H:i:s')];
    $limit = $row['storage_limit_mb'] ?? null;
    if (is_numeric($limit)) {
        $columns['disklimit'] = (int) round((float) $limit);
    }
    return $columns;
}

/**
 * Daily usage import (WHMCS cron, once per server entry; see
 * https://developers.whmcs.com/provisioning-modules/usage-update/): reads the bridge's usage
 * endpoint page by page and writes disk usage, disk limit and lastupdate to each service
 * matched by its service id on this server entry, never by domain. The client area's usage
 * figures and disk overage billing use them.
 */
function mailbridge_UsageUpdate(array $params)
{
    $capsule = 'WHMCS\\Database\\Capsule';
    if (!class_exists($capsule)) {
        return 'Mail bridge: the WHMCS database layer (Capsule) is not available';
    }
    $serverId = (int) ($params['serverid'] ?? 0);
    $counts = ['read' => 0, 'updated' => 0, 'not_read_yet' => 0, 'not_here' => 0];
    $outcome = 'success';
    try {
        $client = MailBridgeClient::fromParams($params);
        $counts['read'] = $client->eachUsage(function (array $row) use ($capsule, $serverId, &$counts) {
            $serviceId = is_scalar($row['service_id']) ? (string) $row['service_id'] : '';
            $columns = mailbridge_usage_columns($row);
            if ($columns === null) {
                $counts['not_read_yet']++;
                return;
            }
            if (!ctype_digit($serviceId) || (int) $serviceId < 1) {
                $counts['not_here']++;
                return;
            }
            $query = $capsule::table('tblhosting')->where('id', (int) $serviceId);
            if ($serverId > 0) {
                $query = $query->where('server', $serverId);
            }
            if ((int) $query->update($columns) > 0) {
                $counts['updated']++;
            } else {
                $counts['not_here']++; // on another server entry, or no longer in WHMCS
            }
        }, mailbridge_usage_page());
    } catch (MailBridgeConfigError $e) {
        $outcome = 'Mail bridge: ' . $e->getMessage();
    } catch (Throwable $e) {
        $outcome = 'Mail bridge: the usage could not be saved: ' . $e->getMessage();
    }
    if (function_exists('logModuleCall')) {
        logModuleCall('mailbridge', 'UsageUpdate', 'server #' . $serverId, json_encode($counts), $outcome);
    }
    return $outcome;
}
