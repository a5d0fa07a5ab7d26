<?php
/**
 * Mail Bridge plugin for Blesta: signs service events and posts them to the mail bridge.
 *
 * Blesta's own Webhooks plugin sends no signature and never retries, so this plugin listens
 * to the service events itself, re-reads the service as it is after the event (with its
 * package and the package's meta) and the client, and posts
 *   {event, service_id, occurred_at, vars, old_service, service, client}
 * signed with Standard Webhooks v1 to https://<bridge>/hooks/<source>
 * (bridge/hooks/blesta.py parses it). Password changes have no Blesta event: a service
 * field named `mailbridge_password` in an add or edit, or a call to changePassword(), sends
 * `MailBridge.changePassword` with vars.password.
 *
 * Blesta cannot be told that a provisioning step failed from an event listener, so a request
 * the bridge could not receive (no answer, 429, 5xx) is kept in an outbox and re-sent, in
 * order per service and with its original webhook-id, by the plugin's cron task. Everything
 * the bridge did receive is visible, and retried, in the bridge's own event log.
 */

require_once __DIR__ . DIRECTORY_SEPARATOR . 'lib' . DIRECTORY_SEPARATOR . 'sender.php';

class MailBridgePlugin extends Plugin
{
    const EVENTS = [
        'Services.addAfter',
        'Services.editAfter',
        'Services.suspendAfter',
        'Services.unsuspendAfter',
        'Services.cancelAfter',
        'Services.renewAfter',
    ];
    const PASSWORD_FIELD = 'mailbridge_password';
    const SECRET_KEY = '/pass|secret|token|private|api_?key/i';
    const SERVICE_KEYS = [
        'id', 'id_code', 'parent_service_id', 'package_group_id', 'pricing_id', 'client_id',
        'module_row_id', 'qty', 'status', 'suspension_reason', 'date_added', 'date_renews',
        'date_last_renewed', 'date_suspended', 'date_canceled', 'name',
    ];
    const OPTION_KEYS = ['option_id', 'option_name', 'option_label', 'option_type', 'option_value', 'qty'];
    const CLIENT_KEYS = ['id', 'id_code', 'first_name', 'last_name', 'company', 'email', 'status'];

    /** Models Loader::loadModels() sets (declared: PHP 8.2 deprecates dynamic properties). */
    public $Services;
    public $Clients;
    public $CronTasks;

    /** @var array|null */
    private $settings;

    public function __construct()
    {
        if (class_exists('Language')) {
            Language::loadLang('mail_bridge_plugin', null, __DIR__ . DIRECTORY_SEPARATOR . 'language' . DIRECTORY_SEPARATOR);
        }
        $this->loadConfig(__DIR__ . DIRECTORY_SEPARATOR . 'config.json');
    }

    /** Registers the outbox cron task (every 5 minutes). */
    public function install($plugin_id)
    {
        Loader::loadModels($this, ['CronTasks']);
        $task = $this->cronTask();
        $taskId = $this->CronTasks->add($task);
        if (!$taskId) {
            $existing = $this->CronTasks->getByKey($task['key'], $task['dir'], $task['task_type']);
            $taskId = $existing ? $existing->id : null;
        }
        if ($taskId) {
            $this->CronTasks->addTaskRun($taskId, ['enabled' => 1, 'interval' => $task['type_value']]);
        }
    }

    public function uninstall($plugin_id, $last_instance)
    {
        Loader::loadModels($this, ['CronTasks']);
        $task = $this->cronTask();
        $run = $this->CronTasks->getTaskRunByKey($task['key'], $task['dir'], false, $task['task_type']);
        if ($run) {
            $this->CronTasks->deleteTaskRun($run->task_run_id);
        }
        if ($last_instance) {
            $existing = $this->CronTasks->getByKey($task['key'], $task['dir'], $task['task_type']);
            if ($existing) {
                $this->CronTasks->deleteTask($existing->id, $task['task_type'], $task['dir']);
            }
        }
    }

    private function cronTask(): array
    {
        return [
            'key' => 'retry_outbox',
            'dir' => 'mail_bridge',
            'task_type' => 'plugin',
            'name' => 'MailBridgePlugin.cron.retry_outbox_name',
            'description' => 'MailBridgePlugin.cron.retry_outbox_desc',
            'type' => 'interval',
            'type_value' => 5,
            'enabled' => 1,
        ];
    }

    public function getEvents()
    {
        $events = [];
        foreach (self::EVENTS as $event) {
            $events[] = ['event' => $event, 'callback' => ['this', 'onServiceEvent']];
        }
        return $events;
    }

    public function cron($key)
    {
        if ($key === 'retry_outbox') {
            $this->flushOutbox(null);
        }
    }

    /**
     * One service event (Blesta passes an EventInterface: getName(), getParams()).
     */
    public function onServiceEvent($event)
    {
        $name = (string) $event->getName();
        $params = self::toArray($event->getParams());
        $serviceId = (int) ($params['service_id'] ?? 0);
        if ($serviceId < 1 || !in_array($name, self::EVENTS, true)) {
            return;
        }
        try {
            $service = $this->loadService($serviceId);
            if ($service === null || !$this->handles($service)) {
                return;
            }
            $vars = self::toArray($params['vars'] ?? []);
            $password = isset($vars[self::PASSWORD_FIELD]) ? (string) $vars[self::PASSWORD_FIELD] : '';
            $body = [
                'event' => $name,
                'service_id' => $serviceId,
                'occurred_at' => self::nowIso(),
                'vars' => self::scrub($vars) ?: new stdClass(),
                'old_service' => isset($params['old_service']) ? $this->serviceData($params['old_service']) : null,
                'service' => $this->serviceData($service),
                'client' => $this->loadClient($service) ?: null,
            ];
            $this->deliver($serviceId, $body, true);
            if ($password !== '' && in_array($name, ['Services.addAfter', 'Services.editAfter'], true)) {
                $this->changePassword($serviceId, $password);
            }
        } catch (Throwable $e) {
            $this->log("$name service #$serviceId not sent: " . $e->getMessage());
        }
    }

    /**
     * Send a new DomainAdmin password for a service (MailBridge.changePassword). Returns the
     * bridge's status ("applied", "queued", "failed", ...) or an error text. A password is
     * never written to the outbox: when the bridge is unreachable, set it again later.
     */
    public function changePassword($service_id, $password)
    {
        $serviceId = (int) $service_id;
        $service = $this->loadService($serviceId);
        if ($service === null) {
            return "service #$serviceId not found";
        }
        $body = [
            'event' => 'MailBridge.changePassword',
            'service_id' => $serviceId,
            'occurred_at' => self::nowIso(),
            'vars' => ['password' => (string) $password],
            'old_service' => null,
            'service' => $this->serviceData($service),
            'client' => $this->loadClient($service) ?: null,
        ];
        $response = $this->deliver($serviceId, $body, false);
        if (is_array($response['json'] ?? null) && isset($response['json']['status'])) {
            return (string) $response['json']['status'];
        }
        return MailBridgeSender::describe($response);
    }

    private function settings(): array
    {
        if ($this->settings === null) {
            $file = getenv('MAILBRIDGE_BLESTA_SETTINGS') ?: __DIR__ . DIRECTORY_SEPARATOR . 'config' . DIRECTORY_SEPARATOR . 'settings.php';
            $settings = is_file($file) ? include $file : null;
            if (!is_array($settings)) {
                throw new RuntimeException("no settings: copy config/settings.example.php to $file");
            }
            $settings += ['package_ids' => [], 'outbox_dir' => __DIR__ . DIRECTORY_SEPARATOR . 'outbox'];
            $this->settings = $settings;
        }
        return $this->settings;
    }

    private function sender(): MailBridgeSender
    {
        $settings = $this->settings();
        return new MailBridgeSender((string) ($settings['url'] ?? ''), (string) ($settings['secret'] ?? ''));
    }

    private function loadService(int $serviceId)
    {
        if (!isset($this->Services)) {
            Loader::loadModels($this, ['Services']);
        }
        $service = $this->Services->get($serviceId);
        return $service ? $service : null;
    }

    private function loadClient($service): array
    {
        if (!isset($this->Clients)) {
            Loader::loadModels($this, ['Clients']);
        }
        $clientId = (int) (self::toArray($service)['client_id'] ?? 0);
        $client = $clientId > 0 ? $this->Clients->get($clientId, false) : null;
        return $client ? self::pick(self::toArray($client), self::CLIENT_KEYS) : [];
    }

    /** Only services of the configured packages (all when package_ids is empty). */
    private function handles($service): bool
    {
        $ids = array_map('intval', (array) $this->settings()['package_ids']);
        if (!$ids) {
            return true;
        }
        $data = self::toArray($service);
        return in_array((int) ($data['package']['id'] ?? 0), $ids, true);
    }

    /**
     * What the bridge needs of a service: its columns, fields (encrypted values left out),
     * configurable options and the package with its meta (secret-looking meta left out).
     */
    private function serviceData($service): ?array
    {
        $data = self::toArray($service);
        if (!$data) {
            return null;
        }
        $out = self::pick($data, self::SERVICE_KEYS);
        $out['fields'] = [];
        foreach ((array) ($data['fields'] ?? []) as $field) {
            $field = self::toArray($field);
            $encrypted = !empty($field['encrypted']) && (string) $field['encrypted'] !== '0';
            if (!isset($field['key']) || preg_match(self::SECRET_KEY, (string) $field['key'])) {
                continue;
            }
            $out['fields'][] = [
                'key' => (string) $field['key'],
                'value' => $encrypted ? null : ($field['value'] ?? null),
                'serialized' => (int) ($field['serialized'] ?? 0),
                'encrypted' => $encrypted ? 1 : 0,
            ];
        }
        $out['options'] = [];
        foreach ((array) ($data['options'] ?? []) as $option) {
            $out['options'][] = self::pick(self::toArray($option), self::OPTION_KEYS);
        }
        $package = self::toArray($data['package'] ?? []);
        if ($package) {
            $meta = [];
            foreach (self::toArray($package['meta'] ?? []) as $key => $value) {
                if (!preg_match(self::SECRET_KEY, (string) $key) && (is_scalar($value) || $value === null)) {
                    $meta[(string) $key] = $value;
                }
            }
            $out['package'] = [
                'id' => $package['id'] ?? null,
                'name' => $package['name'] ?? null,
                'module_id' => $package['module_id'] ?? null,
                'meta' => (object) $meta,
            ];
        }
        return $out;
    }

    /** Input values without anything password-like (they belong in MailBridge.changePassword). */
    private static function scrub(array $vars): array
    {
        $out = [];
        foreach ($vars as $key => $value) {
            if (preg_match(self::SECRET_KEY, (string) $key)) {
                continue;
            }
            $out[$key] = is_array($value) ? self::scrub($value) : $value;
        }
        return $out;
    }

    private static function pick(array $data, array $keys): array
    {
        $out = [];
        foreach ($keys as $key) {
            if (array_key_exists($key, $data)) {
                $out[$key] = $data[$key];
            }
        }
        return $out;
    }

    /** stdClass trees (Blesta's records) as arrays. */
    private static function toArray($value): array
    {
        if ($value === null || $value === false) {
            return [];
        }
        $decoded = json_decode(json_encode($value, JSON_PARTIAL_OUTPUT_ON_ERROR), true);
        return is_array($decoded) ? $decoded : [];
    }

    private static function nowIso(): string
    {
        return (new DateTime('now', new DateTimeZone('UTC')))->format('Y-m-d\TH:i:s.uP');
    }

    /**
     * Post one body. When the service already has undelivered events, this one queues behind
     * them, so the bridge always sees a service's events in Blesta's order.
     */
    private function deliver(int $serviceId, array $body, bool $outbox): array
    {
        $json = json_encode($body, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE);
        $webhookId = MailBridgeSender::newWebhookId();
        if ($outbox && $this->pending($serviceId)) {
            $this->enqueue($serviceId, $webhookId, (string) $body['event'], $json);
            $this->flushOutbox($serviceId);
            return ['http' => 0, 'raw' => '', 'json' => ['status' => 'outbox'], 'error' => 'queued behind undelivered events'];
        }
        $response = $this->sender()->post($json, $webhookId);
        $this->log($body['event'] . " service #$serviceId $webhookId: " . MailBridgeSender::describe($response));
        if ($outbox && MailBridgeSender::transient($response)) {
            $this->enqueue($serviceId, $webhookId, (string) $body['event'], $json);
        }
        return $response;
    }

    private function outboxDir(): string
    {
        $dir = rtrim((string) $this->settings()['outbox_dir'], '/\\');
        if (!is_dir($dir) && !@mkdir($dir, 0700, true) && !is_dir($dir)) {
            throw new RuntimeException("cannot create the outbox $dir");
        }
        return $dir;
    }

    private function pending(?int $serviceId): array
    {
        $pattern = $serviceId === null ? '*.json' : sprintf('%010d-*.json', $serviceId);
        $files = glob($this->outboxDir() . DIRECTORY_SEPARATOR . $pattern) ?: [];
        sort($files, SORT_STRING);
        return $files;
    }

    private function enqueue(int $serviceId, string $webhookId, string $event, string $json): void
    {
        static $seq = 0;
        $seq++;
        $name = sprintf('%010d-%017d-%04d-%s.json', $serviceId, (int) (microtime(true) * 1000000), $seq % 10000, $webhookId);
        $entry = json_encode(['webhook_id' => $webhookId, 'event' => $event, 'body' => $json, 'attempts' => 1]);
        $path = $this->outboxDir() . DIRECTORY_SEPARATOR . $name;
        file_put_contents($path, $entry, LOCK_EX);
        @chmod($path, 0600);
        $this->log("$event service #$serviceId $webhookId: kept in the outbox for the cron task");
    }

    /** Send undelivered events in order; a service stops at its first one that fails again. */
    private function flushOutbox(?int $serviceId): void
    {
        $blocked = [];
        foreach ($this->pending($serviceId) as $file) {
            $service = (int) substr(basename($file), 0, 10);
            if (isset($blocked[$service])) {
                continue;
            }
            $entry = json_decode((string) file_get_contents($file), true);
            if (!is_array($entry) || empty($entry['webhook_id']) || !isset($entry['body'])) {
                @unlink($file);
                continue;
            }
            $response = $this->sender()->post((string) $entry['body'], (string) $entry['webhook_id']);
            $this->log($entry['event'] . " service #$service " . $entry['webhook_id'] . ' (outbox): '
                . MailBridgeSender::describe($response));
            if (MailBridgeSender::transient($response)) {
                $entry['attempts'] = (int) ($entry['attempts'] ?? 1) + 1;
                file_put_contents($file, json_encode($entry), LOCK_EX);
                $blocked[$service] = true;
                continue;
            }
            @unlink($file);
        }
    }

    /** One line per delivery (event, service, webhook-id, outcome); never a body or secret. */
    private function log(string $line): void
    {
        $settings = $this->settings ?? [];
        $file = (string) ($settings['log_file'] ?? '');
        if ($file === '') {
            $file = (string) ($settings['outbox_dir'] ?? __DIR__) . DIRECTORY_SEPARATOR . '..' . DIRECTORY_SEPARATOR . 'mail_bridge.log';
        }
        @file_put_contents($file, gmdate('Y-m-d H:i:s') . ' ' . $line . "\n", FILE_APPEND | LOCK_EX);
    }
}
