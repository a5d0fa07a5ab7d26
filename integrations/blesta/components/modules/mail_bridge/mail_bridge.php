<?php
/**
 * Mail Bridge: a Blesta module that provisions mail accounts (a DomainAdmin with a quota
 * bundle on a Mailcheap NMS server) through the mail bridge.
 *
 * Module rows hold the bridge: its URL, the source name and the source's whsec_ secret
 * (stored encrypted by Blesta). A package names a tier of the bridge (a dropdown read from the
 * bridge). A service has a mail admin username, a mail domain and a password, checked at order
 * time against the mail server's rules; an empty password gets a generated compliant one.
 *
 * Every provisioning step posts one signed event to the bridge, in the payload the bridge's
 * Blesta adapter reads (event, service_id, vars, old_service, service, client; see the
 * repository's docs/design.md#blesta-signed-events), and succeeds only when the bridge answers
 * "applied". Anything else is set as an Input error, so Blesta stops the action and shows why:
 * a failed activation leaves the service pending with the bridge's reason. A step run again
 * with the same data re-sends the same delivery (same webhook-id), which the bridge treats as
 * "try again". Of the client only the id, name, company and e-mail are sent.
 *
 * Module methods: https://docs.blesta.com/display/dev/Modules
 */

require_once __DIR__ . DIRECTORY_SEPARATOR . 'lib' . DIRECTORY_SEPARATOR . 'mail_bridge_api.php';

class MailBridge extends Module
{
    /** Service fields this module keeps. */
    const FIELD_USERNAME = 'mailbridge_username';
    const FIELD_DOMAIN = 'mailbridge_domain';
    const FIELD_PASSWORD = 'mailbridge_password';
    const FIELD_LAST_CALL = 'mailbridge_last_call';
    const FIELD_OWNER = 'mailbridge_owner';
    const FIELD_MAIL_HOSTNAME = 'mailbridge_mail_hostname';
    const FIELD_WEBMAIL_URL = 'mailbridge_webmail_url';
    /** Service fields the bridge may see (never the password, never our bookkeeping). */
    const SENT_FIELDS = [self::FIELD_USERNAME, self::FIELD_DOMAIN];
    const USERNAME_RE = '/^[a-z0-9][a-z0-9._-]{2,63}$/';
    const DOMAIN_RE = '/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/';

    /** Components, models and helpers Loader sets (declared: PHP 8.2 deprecates dynamic properties). */
    public $Input;
    public $Services;
    public $Clients;
    public $Form;
    public $Html;
    public $view;

    public function __construct()
    {
        $this->loadConfig(__DIR__ . DIRECTORY_SEPARATOR . 'config.json');
        Loader::loadComponents($this, ['Input']);
        Language::loadLang('mail_bridge', null, __DIR__ . DIRECTORY_SEPARATOR . 'language' . DIRECTORY_SEPARATOR);
    }

    // ------------------------------------------------------------------ module rows

    public function getGroupOrderOptions()
    {
        return ['first' => Language::_('MailBridge.order_options.first', true)];
    }

    public function manageModule($module, array &$vars)
    {
        return $this->render('manage', ['module' => $module]);
    }

    public function manageAddRow(array &$vars)
    {
        return $this->render('add_row', ['vars' => (object) $vars]);
    }

    public function manageEditRow($module_row, array &$vars)
    {
        if (empty($vars)) {
            $vars = (array) $module_row->meta;
            unset($vars['secret']); // never sent back to the browser
        }
        return $this->render('edit_row', ['vars' => (object) $vars]);
    }

    /**
     * Checks the values and that the bridge answers its self-test with them; the secret is
     * stored encrypted.
     */
    public function addModuleRow(array &$vars)
    {
        return $this->rowMeta($vars, null);
    }

    /** As addModuleRow(); an empty secret keeps the stored one. */
    public function editModuleRow($module_row, array &$vars)
    {
        return $this->rowMeta($vars, $module_row);
    }

    private function rowMeta(array &$vars, $current)
    {
        $label = trim((string) ($vars['label'] ?? ''));
        $url = trim((string) ($vars['bridge_url'] ?? ''));
        $source = trim((string) ($vars['source'] ?? ''));
        $secret = trim((string) ($vars['secret'] ?? ''));
        if ($source === '') {
            $source = 'blesta';
        }
        if ($secret === '' && $current !== null) {
            $secret = (string) ($current->meta->secret ?? '');
        }
        if ($label === '') {
            $label = (string) parse_url($url, PHP_URL_HOST);
        }
        $problem = MailBridgeApi::checkRow($url, $source, $secret);
        if ($problem !== null) {
            $this->Input->setErrors(['mail_bridge' => ['row' => Language::_('MailBridge.!error.row', true, $problem)]]);
            return;
        }
        $api = new MailBridgeApi($url, $source, $secret);
        $response = $api->status();
        $this->logRequest($api, 'status', 'POST ' . $response['url'] . "\n\n{}", $response, []);
        if ($response['http'] !== 200 || ($response['json']['status'] ?? '') !== 'ok') {
            $why = $response['http'] === 0 ? MailBridgeApi::transportError($response) : MailBridgeApi::httpError($response);
            $this->Input->setErrors(['mail_bridge' => ['unreachable' => Language::_('MailBridge.!error.row.unreachable', true, $why)]]);
            return;
        }
        return [
            ['key' => 'label', 'value' => $label, 'encrypted' => 0],
            ['key' => 'bridge_url', 'value' => rtrim($url, '/'), 'encrypted' => 0],
            ['key' => 'source', 'value' => $source, 'encrypted' => 0],
            ['key' => 'secret', 'value' => $secret, 'encrypted' => 1],
        ];
    }

    // ------------------------------------------------------------------ packages

    /**
     * The package's tier: a dropdown of the bridge's tiers (the first bridge of the chosen
     * group, or the chosen bridge). A saved tier the bridge no longer has stays listed, marked.
     */
    public function getPackageFields($vars = null)
    {
        $fields = new ModuleFields();
        $meta = (array) ($vars->meta ?? []); // Blesta passes the posted meta as an array
        $saved = trim((string) ($meta['plan'] ?? ''));
        $options = ['' => Language::_('MailBridge.package.plan_mapping', true)];
        $note = '';
        try {
            foreach ($this->packageApi($vars)->tiers() as $key => $tier) {
                $options[$key] = self::tierLabel($key, $tier);
            }
            if ($saved !== '' && !isset($options[$saved])) {
                $options[$saved] = Language::_('MailBridge.package.plan_stale', true, $saved);
            }
        } catch (RuntimeException $e) {
            if ($saved !== '') {
                $options[$saved] = $saved;
            }
            $note = Language::_('MailBridge.package.plan_unavailable', true, $e->getMessage());
        }
        $plan = $fields->label(Language::_('MailBridge.package.plan', true), 'mail_bridge_plan');
        $plan->attach($fields->fieldSelect('meta[plan]', $options, $saved, ['id' => 'mail_bridge_plan']));
        $fields->setField($plan);

        $moves = $fields->label(Language::_('MailBridge.package.report_moves', true), 'mail_bridge_report_moves');
        $moves->attach($fields->fieldCheckbox(
            'meta[report_moves]',
            '1',
            (string) ($meta['report_moves'] ?? '') === '1',
            ['id' => 'mail_bridge_report_moves']
        ));
        $fields->setField($moves);
        if ($note !== '') {
            $fields->setHtml('<p class="text-danger">' . self::h($note) . '</p>');
        }
        return $fields;
    }

    public function addPackage(array $vars = null)
    {
        return $this->packageMeta((array) $vars);
    }

    public function editPackage($package, array $vars = null)
    {
        return $this->packageMeta((array) $vars);
    }

    /** meta[plan] must be empty or a tier of the bridge; meta[report_moves] is "1" or "0". */
    private function packageMeta(array $vars)
    {
        $plan = trim((string) ($vars['meta']['plan'] ?? ''));
        if ($plan !== '') {
            try {
                $tiers = $this->packageApi((object) $vars)->tiers();
            } catch (RuntimeException $e) {
                $this->Input->setErrors(['meta[plan]' => ['unchecked' => Language::_('MailBridge.!error.plan.unchecked', true, $e->getMessage())]]);
                return;
            }
            if (!isset($tiers[$plan])) {
                $this->Input->setErrors(['meta[plan]' => ['unknown' => Language::_('MailBridge.!error.plan.unknown', true, $plan, implode(', ', array_keys($tiers)))]]);
                return;
            }
        }
        return [
            ['key' => 'plan', 'value' => $plan, 'encrypted' => 0],
            ['key' => 'report_moves', 'value' => !empty($vars['meta']['report_moves']) ? '1' : '0', 'encrypted' => 0],
        ];
    }

    /** The bridge a package form talks to. @throws RuntimeException */
    private function packageApi($vars): MailBridgeApi
    {
        $row = null;
        if (!empty($vars->module_row)) {
            $row = $this->getModuleRow($vars->module_row);
        }
        if (!$row) {
            $rows = $this->getModuleRows(!empty($vars->module_group) ? $vars->module_group : null);
            $row = is_array($rows) && $rows ? reset($rows) : null;
        }
        if (!$row) {
            throw new RuntimeException(Language::_('MailBridge.!error.module_row.missing', true));
        }
        return self::apiFor($row);
    }

    private static function tierLabel(string $key, array $tier): string
    {
        $label = is_scalar($tier['label'] ?? null) && (string) $tier['label'] !== '' ? (string) $tier['label'] : $key;
        $parts = [];
        $names = ['domains' => 'domains', 'mailboxes' => 'mailboxes', 'aliases' => 'aliases', 'storage_mb' => 'MB'];
        foreach ($names as $field => $name) {
            if (isset($tier['bundle'][$field]) && is_scalar($tier['bundle'][$field])) {
                $parts[] = $tier['bundle'][$field] . ' ' . $name;
            }
        }
        return $label . ($label !== $key ? ' [' . $key . ']' : '') . ($parts ? ' (' . implode(', ', $parts) . ')' : '');
    }

    // ------------------------------------------------------------------ service fields

    public function getAdminAddFields($package, $vars = null)
    {
        return $this->serviceFields($vars, false);
    }

    public function getClientAddFields($package, $vars = null)
    {
        return $this->serviceFields($vars, false);
    }

    public function getAdminEditFields($package, $vars = null)
    {
        return $this->serviceFields($vars, true);
    }

    private function serviceFields($vars, bool $edit)
    {
        $fields = new ModuleFields();
        foreach ([self::FIELD_USERNAME => 'username', self::FIELD_DOMAIN => 'domain'] as $name => $lang) {
            $label = $fields->label(Language::_('MailBridge.service.' . $lang, true), $name);
            $label->attach($fields->fieldText($name, $vars->{$name} ?? null, ['id' => $name]));
            $fields->setField($label);
        }
        $password = $fields->label(Language::_($edit ? 'MailBridge.service.password_edit' : 'MailBridge.service.password', true), self::FIELD_PASSWORD);
        $password->attach($fields->fieldPassword(self::FIELD_PASSWORD, ['id' => self::FIELD_PASSWORD, 'autocomplete' => 'new-password']));
        $fields->setField($password);
        return $fields;
    }

    /** Order-time check of the username, domain and (if given) password. */
    public function validateService($package, array $vars = null)
    {
        $errors = self::fieldErrors((array) $vars, true);
        if ($errors) {
            $this->Input->setErrors($errors);
            return false;
        }
        return true;
    }

    public function validateServiceEdit($service, array $vars = null)
    {
        $vars = (array) $vars;
        $errors = self::fieldErrors($vars, false);
        $current = self::fieldsOf($service)[self::FIELD_USERNAME] ?? '';
        if (isset($vars[self::FIELD_USERNAME]) && $current !== ''
            && strtolower(trim((string) $vars[self::FIELD_USERNAME])) !== strtolower($current)) {
            $errors[self::FIELD_USERNAME]['changed'] = Language::_('MailBridge.!error.username.changed', true);
        }
        if ($errors) {
            $this->Input->setErrors($errors);
            return false;
        }
        return true;
    }

    private static function fieldErrors(array $vars, bool $required): array
    {
        $errors = [];
        $username = strtolower(trim((string) ($vars[self::FIELD_USERNAME] ?? '')));
        if (($required || $username !== '') && !preg_match(self::USERNAME_RE, $username)) {
            $errors[self::FIELD_USERNAME]['format'] = Language::_('MailBridge.!error.username.format', true);
        }
        $domain = strtolower(trim((string) ($vars[self::FIELD_DOMAIN] ?? '')));
        if (($required || $domain !== '') && !preg_match(self::DOMAIN_RE, $domain)) {
            $errors[self::FIELD_DOMAIN]['format'] = Language::_('MailBridge.!error.domain.format', true);
        }
        $password = (string) ($vars[self::FIELD_PASSWORD] ?? '');
        if ($password !== '' && !MailBridgeApi::passwordMeetsPolicy($password)) {
            $errors[self::FIELD_PASSWORD]['policy'] = Language::_('MailBridge.!error.password.policy', true);
        }
        return $errors;
    }

    // ------------------------------------------------------------------ provisioning

    /**
     * Order (use_module "false"): checks the fields and stores them, a generated compliant
     * password when none was given. Activation (use_module "true"): sends the create for the
     * pending service being activated (Blesta passes no service id to the module, so it is the
     * client's pending service of this package with this username) and succeeds only when the
     * bridge applied it. A service added directly as active has no id yet: refused with the
     * way round (add it as pending, then activate it).
     */
    public function addService($package, array $vars = null, $parent_package = null, $parent_service = null, $status = 'pending')
    {
        $vars = (array) $vars;
        $useModule = ($vars['use_module'] ?? 'false') === 'true';
        $existing = null;
        if ($useModule) {
            $found = $this->pendingService($vars);
            if (is_string($found)) {
                $this->Input->setErrors(['service_id' => ['unknown' => Language::_($found, true)]]);
                return;
            }
            $existing = $found;
            // Stored fields, overridden by what this request gives.
            foreach (self::fieldsOf($existing) as $key => $value) {
                if (!isset($vars[$key]) || (string) $vars[$key] === '') {
                    $vars[$key] = $value;
                }
            }
        }
        if (!$this->validateService($package, $vars)) {
            return;
        }
        $values = [
            self::FIELD_USERNAME => strtolower(trim((string) $vars[self::FIELD_USERNAME])),
            self::FIELD_DOMAIN => strtolower(trim((string) $vars[self::FIELD_DOMAIN])),
            self::FIELD_PASSWORD => (string) ($vars[self::FIELD_PASSWORD] ?? ''),
        ];
        if ($values[self::FIELD_PASSWORD] === '') {
            $values[self::FIELD_PASSWORD] = MailBridgeApi::generatePassword();
        }
        if (!$useModule) {
            return self::fieldList($values);
        }
        if (!($api = $this->rowApi())) {
            return;
        }
        $serviceId = (int) $existing->id;
        $values += self::fieldsOf($existing);
        $service = $this->serviceData($serviceId, (int) ($vars['client_id'] ?? $existing->client_id),
            $vars['pricing_id'] ?? $existing->pricing_id, 'active', $values, $package, []);
        $eventVars = [
            'status' => 'active',
            'client_id' => $service['client_id'],
            'pricing_id' => $service['pricing_id'],
            'configoptions' => self::configOptions($vars['configoptions'] ?? null, $existing),
            'password' => $values[self::FIELD_PASSWORD],
        ];
        $sent = $this->send($api, $serviceId, 'Services.addAfter', $eventVars, $service, null, $values);
        if (!$sent['ok']) {
            $this->Input->setErrors(['mail_bridge' => ['failed' => Language::_('MailBridge.!error.bridge', true, $sent['message'])]]);
            return;
        }
        $values[self::FIELD_LAST_CALL] = json_encode($sent['record']);
        $values[self::FIELD_OWNER] = (string) $service['client_id'];
        $values += $this->setupFields($api, $serviceId);
        return self::fieldList($values);
    }

    /**
     * Field edits. A new password is sent as MailBridge.changePassword; changed configurable
     * options as a package change. The username cannot change.
     */
    public function editService($package, $service, array $vars = null, $parent_package = null, $parent_service = null)
    {
        $vars = (array) $vars;
        if (!$this->validateServiceEdit($service, $vars)) {
            return;
        }
        $values = self::fieldsOf($service);
        $domain = strtolower(trim((string) ($vars[self::FIELD_DOMAIN] ?? '')));
        if ($domain !== '') {
            $values[self::FIELD_DOMAIN] = $domain;
        }
        $password = (string) ($vars[self::FIELD_PASSWORD] ?? '');
        if (($vars['use_module'] ?? 'true') !== 'true' || $service->status === 'pending') {
            if ($password !== '') {
                $values[self::FIELD_PASSWORD] = $password;
            }
            return self::fieldList($values);
        }
        if (!($api = $this->rowApi())) {
            return;
        }
        if (!$this->reportMove($api, $package, $service, $values)) {
            return;
        }
        $current = self::configOptions(null, $service);
        $wanted = self::configOptions($vars['configoptions'] ?? null, $service);
        if (!self::sameOptions($current, $wanted)) {
            $data = $this->serviceData((int) $service->id, (int) $service->client_id, $vars['pricing_id'] ?? $service->pricing_id,
                $service->status, $values, $package, $service->options ?? []);
            $sent = $this->send($api, (int) $service->id, 'Services.editAfter', ['configoptions' => $wanted], $data, $this->oldService($service), $values);
            if (!$this->accept($sent, $values)) {
                return;
            }
        }
        if ($password !== '') {
            $data = $this->serviceData((int) $service->id, (int) $service->client_id, $service->pricing_id,
                $service->status, $values, $package, $service->options ?? []);
            $sent = $this->send($api, (int) $service->id, 'MailBridge.changePassword', ['password' => $password], $data, null, $values);
            if (!$this->accept($sent, $values)) {
                return;
            }
            $values[self::FIELD_PASSWORD] = $password;
        }
        return self::fieldList($values);
    }

    /** Another package: the bridge resolves the new package's tier (or its id). */
    public function changeServicePackage($package_from, $package_to, $service, $parent_package = null, $parent_service = null)
    {
        return $this->lifecycle($package_to, $service, 'Services.editAfter', [
            'configoptions' => self::configOptions(null, $service),
        ], $this->oldService($service, $package_from));
    }

    public function suspendService($package, $service, $parent_package = null, $parent_service = null)
    {
        return $this->lifecycle($package, $service, 'Services.suspendAfter', [
            'status' => 'suspended',
            'suspension_reason' => $service->suspension_reason ?? null,
        ], null, 'suspended');
    }

    public function unsuspendService($package, $service, $parent_package = null, $parent_service = null)
    {
        return $this->lifecycle($package, $service, 'Services.unsuspendAfter', ['status' => 'active'], null, 'active');
    }

    /** Cancellation taking effect: the bridge disables the account, then deletes it after its grace days. */
    public function cancelService($package, $service, $parent_package = null, $parent_service = null)
    {
        return $this->lifecycle($package, $service, 'Services.cancelAfter', ['status' => 'canceled'], null, 'canceled');
    }

    /**
     * Renewal: the bridge records it and changes nothing on the mail server, so it never stops
     * Blesta's renewal; an undelivered one is only logged.
     */
    public function renewService($package, $service, $parent_package = null, $parent_service = null)
    {
        $api = $this->rowApi(false);
        if ($api === null) {
            return null;
        }
        $values = self::fieldsOf($service);
        $data = $this->serviceData((int) $service->id, (int) $service->client_id, $service->pricing_id,
            $service->status, $values, $package, $service->options ?? []);
        try {
            $sent = $this->send($api, (int) $service->id, 'Services.renewAfter', [], $data, null, $values, MailBridgeApi::READ_TIMEOUT_S);
        } catch (Throwable $e) {
            return null;
        }
        if (!$sent['ok']) {
            return null;
        }
        $values[self::FIELD_LAST_CALL] = json_encode($sent['record']);
        return self::fieldList($values);
    }

    /**
     * Report that the service now belongs to another client (called by the Mail Bridge
     * plugin after Blesta saved the move; the module also reports an unreported move before
     * its next action). True when the bridge applied it or there was nothing to report; false
     * with Input errors otherwise (the admin tab then offers to send it again).
     */
    public function reportClientMove($package, $service): bool
    {
        if (!($api = $this->rowApi())) {
            return false;
        }
        $values = self::fieldsOf($service);
        $owner = (string) ($values[self::FIELD_OWNER] ?? '');
        if (!$this->reportMove($api, $package, $service, $values)) {
            return false;
        }
        if (($values[self::FIELD_OWNER] ?? '') !== $owner) {
            $this->saveField((int) $service->id, self::FIELD_OWNER, (string) $values[self::FIELD_OWNER]);
        }
        return true;
    }

    /** One lifecycle event for an existing service; the fields to keep, or null with Input errors. */
    private function lifecycle($package, $service, string $event, array $eventVars, ?array $old, ?string $status = null)
    {
        if (!($api = $this->rowApi())) {
            return;
        }
        $values = self::fieldsOf($service);
        if (!$this->reportMove($api, $package, $service, $values)) {
            return;
        }
        $data = $this->serviceData((int) $service->id, (int) $service->client_id, $service->pricing_id,
            $status ?? $service->status, $values, $package, $service->options ?? []);
        $sent = $this->send($api, (int) $service->id, $event, $eventVars, $data, $old, $values);
        if (!$this->accept($sent, $values)) {
            return;
        }
        return self::fieldList($values);
    }

    /** True when applied (the record joins $values); else the bridge's reason as Input error. */
    private function accept(array $sent, array &$values): bool
    {
        if (!$sent['ok']) {
            $this->Input->setErrors(['mail_bridge' => ['failed' => Language::_('MailBridge.!error.bridge', true, $sent['message'])]]);
            return false;
        }
        $values[self::FIELD_LAST_CALL] = json_encode($sent['record']);
        return true;
    }

    /**
     * A service whose client is not the one the bridge last heard of (moved in Blesta without
     * the plugin, or while the bridge was away) is reported as a move first. False with Input
     * errors when that report fails.
     */
    private function reportMove(MailBridgeApi $api, $package, $service, array &$values): bool
    {
        $owner = (string) ($values[self::FIELD_OWNER] ?? '');
        $client = (string) ($service->client_id ?? '');
        if ($owner === '' || $client === '' || (int) $owner === (int) $client) {
            if ($owner === '' && $client !== '') {
                $values[self::FIELD_OWNER] = $client;
            }
            return true;
        }
        $data = $this->serviceData((int) $service->id, (int) $client, $service->pricing_id, $service->status, $values, $package, $service->options ?? []);
        $old = ['id' => (int) $service->id, 'client_id' => (int) $owner, 'status' => $service->status];
        $sent = $this->send($api, (int) $service->id, 'Services.editAfter', ['client_id' => (int) $client], $data, $old, $values);
        if (!$this->accept($sent, $values)) {
            return false;
        }
        $values[self::FIELD_OWNER] = $client;
        return true;
    }

    /**
     * Post one event. The webhook-id and occurred_at of the service's last unsuccessful
     * request are reused when the same event with the same data is sent again (a retry), so
     * the bridge sees a repeat of that delivery; otherwise both are new. The record of the
     * request is saved on the service before sending (a request that dies half-way is retried
     * with the same id). Returns ok, message and the record.
     */
    private function send(MailBridgeApi $api, int $serviceId, string $event, array $eventVars, array $service, ?array $old, array $values, int $timeout = MailBridgeApi::TIMEOUT_S): array
    {
        $client = $this->clientData((int) $service['client_id']);
        $payload = [
            'event' => $event,
            'service_id' => $serviceId,
            'vars' => $eventVars,
            'old_service' => $old,
            'service' => $service,
            'client' => $client ?: null,
        ];
        $hash = $api->digest($event . "\n" . MailBridgeApi::canonicalJson($payload));
        $last = json_decode((string) ($values[self::FIELD_LAST_CALL] ?? ''), true);
        if (is_array($last) && ($last['event'] ?? '') === $event && ($last['hash'] ?? '') === $hash
            && empty($last['ok']) && !empty($last['id']) && !empty($last['at'])) {
            $webhookId = (string) $last['id'];
            $occurredAt = (string) $last['at'];
        } else {
            $webhookId = MailBridgeApi::newWebhookId();
            $occurredAt = MailBridgeApi::nowIso();
        }
        $kept = $eventVars;
        unset($kept['password']);
        $record = [
            'event' => $event, 'hash' => $hash, 'id' => $webhookId, 'at' => $occurredAt, 'ok' => false,
            'vars' => $kept, 'status' => $service['status'],
        ];
        $this->saveField($serviceId, self::FIELD_LAST_CALL, json_encode($record));

        $body = MailBridgeApi::canonicalJson($payload + ['occurred_at' => $occurredAt]);
        $response = $api->postEvent($body, $webhookId, $timeout);
        [$ok, $message] = MailBridgeApi::outcome($response);
        $mask = isset($eventVars['password']) ? [(string) $eventVars['password']] : [];
        $this->logRequest($api, $event, 'POST ' . $response['url'] . "\nwebhook-id: " . $webhookId . "\n\n" . $body, $response, $mask, $ok);
        if ($ok) {
            $record['ok'] = true;
            $this->saveField($serviceId, self::FIELD_LAST_CALL, json_encode($record));
        }
        return ['ok' => $ok, 'message' => $message, 'record' => $record];
    }

    /**
     * Blesta's module log (Tools > Logs > Module): the request and the answer, with the secret
     * and any password replaced by asterisks.
     */
    private function logRequest(MailBridgeApi $api, string $action, string $request, array $response, array $mask, ?bool $ok = null): void
    {
        $secrets = array_merge($api->secrets(), $mask);
        foreach ($mask as $password) {
            $secrets[] = substr(json_encode($password, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), 1, -1);
        }
        $clean = function (string $text) use ($secrets): string {
            foreach ($secrets as $secret) {
                if ((string) $secret !== '') {
                    $text = str_replace((string) $secret, '***', $text);
                }
            }
            return $text;
        };
        $ok = $ok ?? ($response['http'] >= 200 && $response['http'] < 300);
        $url = strtok($response['url'], '?') . ' ' . $action;
        try {
            $this->log($url, $clean($request), 'input', true);
            $this->log($url, $clean('HTTP ' . $response['http'] . ($response['error'] ? ' ' . $response['error'] : '') . "\n" . $response['raw']), 'output', $ok);
        } catch (Throwable $e) {
            // The log is bookkeeping: a full log table must not stop provisioning.
        }
    }

    // ------------------------------------------------------------------ tabs

    public function getAdminTabs($package)
    {
        return ['tabMailBridge' => Language::_('MailBridge.tab_admin', true)];
    }

    public function getClientTabs($package)
    {
        return ['tabClientMailBridge' => Language::_('MailBridge.tab_client', true)];
    }

    /**
     * Admin tab: the bridge's state of the service, its last event, the last request from
     * Blesta, whether the package's tier is still a tier of the bridge, and a button that
     * sends an unsuccessful request again (same delivery: the bridge retries it).
     */
    public function tabMailBridge($package, $service, array $get = null, array $post = null, array $files = null)
    {
        $notice = '';
        if (!empty($post['mailbridge_retry'])) {
            $notice = $this->retry($package, $service);
            Loader::loadModels($this, ['Services']);
            $service = $this->Services->get((int) $service->id) ?: $service; // the new record
        }
        $row = $this->getModuleRow($service->module_row_id ?? null) ?: $this->getModuleRow();
        $info = null;
        $error = '';
        $staleTier = '';
        $eventsUrl = '';
        try {
            $api = self::apiFor($row);
            $eventsUrl = $api->baseUrl() . '/admin/events?source=' . rawurlencode($api->source())
                . '&service=' . rawurlencode((string) $service->id);
            $info = $api->service((int) $service->id);
            $plan = trim((string) ($package->meta->plan ?? ''));
            if ($plan !== '') {
                $tiers = $api->tiers();
                if (!isset($tiers[$plan])) {
                    $staleTier = Language::_('MailBridge.!error.plan.unknown', true, $plan, implode(', ', array_keys($tiers)));
                }
            }
        } catch (RuntimeException $e) {
            $error = $e->getMessage();
        }
        $last = json_decode((string) (self::fieldsOf($service)[self::FIELD_LAST_CALL] ?? ''), true);
        $last = is_array($last) ? $last : null;
        $retryNote = '';
        if ($last !== null && empty($last['ok'])) {
            if ($service->status === 'pending') {
                $retryNote = Language::_('MailBridge.tab.retry_pending', true);
            } elseif ($last['event'] === 'MailBridge.changePassword') {
                $retryNote = Language::_('MailBridge.tab.retry_password', true);
            }
        }
        return $this->render('tab_admin', [
            'info' => $info,
            'error' => $error,
            'notice' => $notice,
            'last' => $last,
            'can_retry' => $last !== null && empty($last['ok']) && $retryNote === '',
            'retry_note' => $retryNote,
            'stale_tier' => $staleTier,
            'events_url' => $eventsUrl,
        ]);
    }

    /** Client tab: how to set up mail (records from the bridge) and the account's usage. */
    public function tabClientMailBridge($package, $service, array $get = null, array $post = null, array $files = null)
    {
        $info = null;
        $usage = null;
        $notice = '';
        try {
            $api = self::apiFor($this->getModuleRow($service->module_row_id ?? null) ?: $this->getModuleRow());
            $info = $api->service((int) $service->id);
            if ($info === null) {
                $notice = Language::_('MailBridge.tab.being_set_up', true);
            } else {
                try {
                    $usage = $api->usageOf((int) $service->id);
                } catch (RuntimeException $e) {
                    $usage = null; // set-up records are still worth showing
                }
            }
        } catch (RuntimeException $e) {
            $notice = Language::_('MailBridge.tab.unavailable', true);
        }
        return $this->render('tab_client', ['info' => $info, 'usage' => $usage, 'notice' => $notice]);
    }

    /** Send the service's last unsuccessful request again, rebuilt from the service as it is. */
    private function retry($package, $service): string
    {
        $values = self::fieldsOf($service);
        $last = json_decode((string) ($values[self::FIELD_LAST_CALL] ?? ''), true);
        if (!is_array($last) || !empty($last['ok']) || $service->status === 'pending'
            || ($last['event'] ?? '') === 'MailBridge.changePassword') {
            return '';
        }
        if (!($api = $this->rowApi())) {
            return '';
        }
        $eventVars = is_array($last['vars'] ?? null) ? $last['vars'] : [];
        if ($last['event'] === 'Services.addAfter') {
            $eventVars['password'] = (string) ($values[self::FIELD_PASSWORD] ?? '');
        }
        $data = $this->serviceData((int) $service->id, (int) $service->client_id, $service->pricing_id,
            (string) ($last['status'] ?? $service->status), $values, $package, $service->options ?? []);
        $old = $last['event'] === 'Services.editAfter' && isset($eventVars['client_id'])
            ? ['id' => (int) $service->id, 'client_id' => (int) ($values[self::FIELD_OWNER] ?? 0), 'status' => $service->status]
            : null;
        $sent = $this->send($api, (int) $service->id, (string) $last['event'], $eventVars, $data, $old, $values);
        if ($sent['ok'] && isset($eventVars['client_id'])) {
            $this->saveField((int) $service->id, self::FIELD_OWNER, (string) $service->client_id);
        }
        return Language::_('MailBridge.tab.retried', true, $sent['message']);
    }

    // ------------------------------------------------------------------ building blocks

    /** The bridge of the current module row; null with an Input error (or silently) when none. */
    private function rowApi(bool $report = true): ?MailBridgeApi
    {
        try {
            return self::apiFor($this->getModuleRow());
        } catch (RuntimeException $e) {
            if ($report) {
                $this->Input->setErrors(['module_row' => ['missing' => Language::_('MailBridge.!error.bridge', true, $e->getMessage())]]);
            }
            return null;
        }
    }

    /** @throws RuntimeException */
    private static function apiFor($row): MailBridgeApi
    {
        if (!$row || !isset($row->meta)) {
            throw new RuntimeException(Language::_('MailBridge.!error.module_row.missing', true));
        }
        try {
            return new MailBridgeApi(
                (string) ($row->meta->bridge_url ?? ''),
                (string) ($row->meta->source ?? ''),
                (string) ($row->meta->secret ?? '')
            );
        } catch (InvalidArgumentException $e) {
            throw new RuntimeException('the bridge "' . ($row->meta->label ?? '?') . '" is not usable: ' . $e->getMessage());
        }
    }

    /**
     * The pending service an activation is for: vars' service_id when given, else the
     * client's one pending service of this pricing with this username. A language key when
     * there is none or more than one.
     *
     * @return stdClass|string
     */
    private function pendingService(array $vars)
    {
        Loader::loadModels($this, ['Services']);
        if (!empty($vars['service_id']) && ($service = $this->Services->get((int) $vars['service_id']))) {
            return $service;
        }
        $clientId = (int) ($vars['client_id'] ?? 0);
        $username = strtolower(trim((string) ($vars[self::FIELD_USERNAME] ?? '')));
        $found = [];
        foreach ($clientId > 0 ? (array) $this->Services->getAllByClient($clientId, 'pending') : [] as $row) {
            if (isset($vars['pricing_id']) && (int) $row->pricing_id !== (int) $vars['pricing_id']) {
                continue;
            }
            $service = $this->Services->get((int) $row->id);
            $name = strtolower((string) (self::fieldsOf($service)[self::FIELD_USERNAME] ?? ''));
            if ($service && ($username === '' || $name === $username)) {
                $found[] = $service;
            }
        }
        if (count($found) === 1) {
            return $found[0];
        }
        return $found ? 'MailBridge.!error.service_id.ambiguous' : 'MailBridge.!error.service_id.unknown';
    }

    /** The service as the bridge reads it: columns, the two mail fields, options, package. */
    private function serviceData(int $serviceId, int $clientId, $pricingId, string $status, array $values, $package, $options): array
    {
        $fields = [];
        foreach (self::SENT_FIELDS as $key) {
            if (isset($values[$key])) {
                $fields[] = ['key' => $key, 'value' => (string) $values[$key], 'encrypted' => 0];
            }
        }
        $list = [];
        foreach ((array) $options as $option) {
            $option = (object) $option;
            $list[] = [
                'option_name' => $option->option_name ?? null,
                'option_type' => $option->option_type ?? null,
                'option_value' => $option->option_value ?? ($option->value ?? null),
                'qty' => isset($option->qty) ? (int) $option->qty : null,
            ];
        }
        return [
            'id' => $serviceId,
            'client_id' => $clientId,
            'pricing_id' => $pricingId === null || $pricingId === '' ? null : (int) $pricingId,
            'status' => $status,
            'fields' => $fields,
            'options' => $list,
            'package' => [
                'id' => isset($package->id) ? (int) $package->id : null,
                'name' => $package->name ?? null,
                'module_id' => isset($package->module_id) ? (int) $package->module_id : null,
                'meta' => ['plan' => (string) ($package->meta->plan ?? '')],
            ],
        ];
    }

    /** The service before a change (package change, client move): what the bridge compares. */
    private function oldService($service, $package = null): array
    {
        $package = $package ?? ($service->package ?? null);
        return [
            'id' => (int) $service->id,
            'client_id' => (int) $service->client_id,
            'pricing_id' => isset($service->pricing_id) ? (int) $service->pricing_id : null,
            'status' => $service->status,
            'package' => [
                'id' => isset($package->id) ? (int) $package->id : null,
                'meta' => ['plan' => (string) ($package->meta->plan ?? '')],
            ],
        ];
    }

    /** Only the client's id, name, company and e-mail ever leave Blesta. */
    private function clientData(int $clientId): array
    {
        if ($clientId < 1) {
            return [];
        }
        Loader::loadModels($this, ['Clients']);
        $client = $this->Clients->get($clientId, false);
        if (!$client) {
            return [];
        }
        return [
            'id' => (int) $client->id,
            'first_name' => $client->first_name ?? null,
            'last_name' => $client->last_name ?? null,
            'company' => $client->company ?? null,
            'email' => $client->email ?? null,
        ];
    }

    /** Configurable options as name => value (quantity for quantity options). */
    private static function configOptions($given, $service): array
    {
        if (is_array($given)) {
            $out = [];
            foreach ($given as $name => $value) {
                $out[(string) $name] = is_scalar($value) ? (string) $value : '';
            }
            return $out;
        }
        $out = [];
        foreach ((array) ($service->options ?? []) as $option) {
            $option = (object) $option;
            if (!empty($option->option_name)) {
                $out[(string) $option->option_name] = ($option->option_type ?? '') === 'quantity'
                    ? (string) ($option->qty ?? '0')
                    : (string) ($option->option_value ?? ($option->value ?? ''));
            }
        }
        return $out;
    }

    private static function sameOptions(array $a, array $b): bool
    {
        foreach (array_unique(array_merge(array_keys($a), array_keys($b))) as $name) {
            $left = (string) ($a[$name] ?? '0');
            $right = (string) ($b[$name] ?? '0');
            if (($left === '' ? '0' : $left) !== ($right === '' ? '0' : $right)) {
                return false;
            }
        }
        return true;
    }

    /** The mail host and webmail address for welcome e-mail tags (best effort). */
    private function setupFields(MailBridgeApi $api, int $serviceId): array
    {
        try {
            $setup = (array) (($api->service($serviceId) ?? [])['setup'] ?? []);
        } catch (RuntimeException $e) {
            return [];
        }
        $out = [];
        foreach ([self::FIELD_MAIL_HOSTNAME => 'mail_hostname', self::FIELD_WEBMAIL_URL => 'webmail_url'] as $field => $key) {
            if (isset($setup[$key]) && is_scalar($setup[$key]) && (string) $setup[$key] !== '') {
                $out[$field] = (string) $setup[$key];
            }
        }
        return $out;
    }

    /** A service's fields as key => value. */
    private static function fieldsOf($service): array
    {
        $out = [];
        foreach ((array) ($service->fields ?? []) as $field) {
            $field = (object) $field;
            if (isset($field->key)) {
                $out[(string) $field->key] = $field->value ?? null;
            }
        }
        return $out;
    }

    /** key => value as Blesta's service field list; the password is stored encrypted. */
    private static function fieldList(array $values): array
    {
        $out = [];
        foreach ($values as $key => $value) {
            if ($value === null) {
                continue;
            }
            $out[] = ['key' => (string) $key, 'value' => (string) $value, 'encrypted' => $key === self::FIELD_PASSWORD ? 1 : 0];
        }
        return $out;
    }

    /** Write one service field now (used where Blesta would not store what a method returns). */
    private function saveField(int $serviceId, string $key, string $value): void
    {
        Loader::loadModels($this, ['Services']);
        $service = $this->Services->get($serviceId);
        if (!$service) {
            return;
        }
        $vars = ['key' => $key, 'value' => $value, 'encrypted' => 0];
        if (array_key_exists($key, self::fieldsOf($service))) {
            $this->Services->editField($serviceId, $vars);
        } else {
            $this->Services->addField($serviceId, $vars);
        }
    }

    private function render(string $view, array $vars): string
    {
        $this->view = new View($view, 'default');
        $this->view->base_uri = $this->base_uri;
        $this->view->setDefaultView('components' . DS . 'modules' . DS . 'mail_bridge' . DS);
        Loader::loadHelpers($this, ['Form', 'Html']);
        foreach ($vars as $name => $value) {
            $this->view->set($name, $value);
        }
        return $this->view->fetch();
    }

    public static function h($value): string
    {
        return htmlspecialchars((string) $value, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
    }
}
