<?php
/**
 * Test harness: runs the real WHMCS module / hook file / Blesta plugin with stubs for the
 * billing system's globals only (logModuleCall, service properties, localAPI, add_hook,
 * logActivity; Blesta's Plugin, Loader, Language and models). Everything else is real: curl,
 * json, the network, the bridge, the mail server simulator.
 *
 *   php harness.php scenario.json   ->   prints {"result": <return value>} as JSON
 *
 * State the stubs keep (in scenario.state_dir): properties.json (service properties by service
 * id), module_log.json (every logModuleCall with its arguments and the text WHMCS would store
 * after masking the replacement vars), localapi.json, activity.json, service_passwords.json
 * (the service password by service id, as UpdateClientProduct saved it).
 *
 * scenario.localapi_fail: localAPI commands that answer {"result": "error"} this run.
 */

error_reporting(E_ALL);
set_error_handler(function ($severity, $message, $file, $line) {
    if (!(error_reporting() & $severity)) {
        return false; // silenced with @
    }
    throw new ErrorException($message, 0, $severity, $file, $line);
});

$scenario = json_decode((string) file_get_contents($argv[1]), true);
if (!is_array($scenario)) {
    fwrite(STDERR, "harness: cannot read the scenario\n");
    exit(2);
}
$GLOBALS['harness'] = $scenario;
define('HARNESS_STATE', rtrim($scenario['state_dir'], '/'));
define('HARNESS_ROOT', dirname(__DIR__, 2) . '/integrations');

function harness_read(string $name, $default)
{
    $path = HARNESS_STATE . '/' . $name;
    if (!is_file($path)) {
        return $default;
    }
    $data = json_decode((string) file_get_contents($path), true);
    return $data === null ? $default : $data;
}

function harness_write(string $name, $data): void
{
    file_put_contents(HARNESS_STATE . '/' . $name, json_encode($data, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES));
}

function harness_append(string $name, $entry): void
{
    $list = harness_read($name, []);
    $list[] = $entry;
    harness_write($name, $list);
}

function harness_text($value): string
{
    return is_string($value) ? $value : json_encode($value, JSON_UNESCAPED_SLASHES);
}

// ---------------------------------------------------------------- WHMCS stubs
define('WHMCS', true);

/** WHMCS replaces each replacement var with asterisks in what it stores. */
function logModuleCall($module, $action, $requestString, $responseData, $processedData = '', $replaceVars = [])
{
    $mask = function ($value) use ($replaceVars) {
        $text = harness_text($value);
        foreach ((array) $replaceVars as $secret) {
            if ((string) $secret !== '') {
                $text = str_replace((string) $secret, str_repeat('*', strlen((string) $secret)), $text);
            }
        }
        return $text;
    };
    harness_append('module_log.json', [
        'module' => $module,
        'action' => $action,
        'request' => $requestString,
        'response' => $responseData,
        'processed' => $processedData,
        'replace_vars' => array_values((array) $replaceVars),
        'stored' => [$mask($requestString), $mask($responseData), $mask($processedData)],
    ]);
}

function logActivity($message, $userId = 0)
{
    harness_append('activity.json', $message);
}

$GLOBALS['harness_hooks'] = [];
function add_hook($name, $priority, $callback)
{
    $GLOBALS['harness_hooks'][$name][] = $callback;
}

/** $model->serviceProperties: get/save backed by properties.json. */
class HarnessServiceProperties
{
    private $serviceId;

    public function __construct($serviceId)
    {
        $this->serviceId = (string) $serviceId;
    }

    public function get($name)
    {
        $all = harness_read('properties.json', []);
        return $all[$this->serviceId][$name] ?? '';
    }

    public function save(array $values)
    {
        $all = harness_read('properties.json', []);
        foreach ($values as $name => $value) {
            $all[$this->serviceId][$name] = (string) $value;
        }
        harness_write('properties.json', $all);
    }
}

class HarnessServiceModel
{
    public $id;
    public $serviceProperties;

    public function __construct($serviceId)
    {
        $this->id = (int) $serviceId;
        $this->serviceProperties = new HarnessServiceProperties($serviceId);
    }
}

/** Module $params as WHMCS builds them: the service properties are custom fields too. */
function harness_params(array $params): array
{
    if (isset($params['serviceid'])) {
        $props = harness_read('properties.json', [])[(string) $params['serviceid']] ?? [];
        $params['customfields'] = array_merge((array) ($params['customfields'] ?? []), $props);
        $params['model'] = new HarnessServiceModel($params['serviceid']);
    }
    return $params;
}

function harness_module(): void
{
    require_once HARNESS_ROOT . '/whmcs/modules/servers/mailbridge/mailbridge.php';
}

/**
 * localAPI: GetClientsProducts from scenario.services, ModuleCustom runs the module,
 * UpdateClientProduct keeps servicepassword in service_passwords.json. Parameter names as in
 * https://developers.whmcs.com/api-reference/ (serviceid, func_name, servicepassword).
 */
function localAPI($command, $data = [], $adminUser = null)
{
    harness_append('localapi.json', ['command' => $command, 'data' => $data]);
    $services = $GLOBALS['harness']['services'] ?? [];
    if (in_array($command, (array) ($GLOBALS['harness']['localapi_fail'] ?? []), true)) {
        return ['result' => 'error', 'message' => "harness: $command failed as the scenario asked"];
    }
    if ($command === 'UpdateClientProduct') {
        $id = (string) ($data['serviceid'] ?? '');
        if ($id === '' || (int) $id < 1) {
            return ['result' => 'error', 'message' => 'Service ID Not Found'];
        }
        if (array_key_exists('servicepassword', $data)) {
            $passwords = harness_read('service_passwords.json', []);
            $passwords[$id] = (string) $data['servicepassword'];
            harness_write('service_passwords.json', $passwords);
        }
        return ['result' => 'success', 'serviceid' => (int) $id];
    }
    if ($command === 'GetClientsProducts') {
        $rows = [];
        foreach ($services as $id => $params) {
            if (isset($data['serviceid']) && (int) $data['serviceid'] !== (int) $id) {
                continue;
            }
            if (isset($data['clientid']) && (int) $data['clientid'] !== (int) $params['userid']) {
                continue;
            }
            $fields = [];
            $n = 0;
            foreach (harness_params($params)['customfields'] as $name => $value) {
                $fields[] = ['id' => (string) ++$n, 'name' => $name, 'translated_name' => $name, 'value' => $value];
            }
            $rows[] = [
                'id' => (string) $id, 'clientid' => (string) $params['userid'], 'pid' => (string) $params['pid'],
                'domain' => $params['domain'] ?? '', 'username' => $params['username'] ?? '', 'status' => 'Active',
                'customfields' => ['customfield' => $fields], 'configoptions' => ['configoption' => []],
            ];
        }
        $start = (int) ($data['limitstart'] ?? 0);
        $page = array_slice($rows, $start, (int) ($data['limitnum'] ?? 25));
        return ['result' => 'success', 'totalresults' => count($rows), 'startnumber' => $start,
            'numreturned' => count($page), 'products' => ['product' => $page]];
    }
    if ($command === 'ModuleCustom') {
        $id = (string) ($data['serviceid'] ?? '');
        if (!isset($services[$id])) {
            return ['result' => 'error', 'message' => 'Service ID not found'];
        }
        harness_module();
        $function = 'mailbridge_' . $data['func_name'];
        $outcome = $function(harness_params($services[$id]));
        return $outcome === 'success' ? ['result' => 'success'] : ['result' => 'error', 'message' => $outcome];
    }
    return ['result' => 'error', 'message' => "harness: localAPI $command is not stubbed"];
}

// ---------------------------------------------------------------- Blesta stubs
if (!defined('DS')) {
    define('DS', DIRECTORY_SEPARATOR);
}

class Plugin
{
    public $config;

    public function loadConfig($file)
    {
        $this->config = json_decode((string) file_get_contents($file));
    }
}

class Language
{
    public static function loadLang($name, $lang = null, $dir = null)
    {
    }
}

/** Services::get / Clients::get answer from scenario.blesta. */
class HarnessBlestaModel
{
    private $rows;

    public function __construct(array $rows)
    {
        $this->rows = $rows;
    }

    public function get($id, $extra = null)
    {
        $row = $this->rows[(string) $id] ?? null;
        return $row === null ? false : json_decode(json_encode($row));
    }
}

class HarnessCronTasks
{
    public function add(array $task)
    {
        harness_append('cron.json', ['add' => $task]);
        return 7;
    }

    public function getByKey($key, $dir, $type)
    {
        return null;
    }

    public function addTaskRun($taskId, array $vars)
    {
        harness_append('cron.json', ['run' => $taskId, 'vars' => $vars]);
        return 1;
    }
}

class Loader
{
    public static function loadModels($object, array $models)
    {
        $blesta = $GLOBALS['harness']['blesta'] ?? [];
        foreach ($models as $model) {
            if ($model === 'Services') {
                $object->Services = new HarnessBlestaModel($blesta['services'] ?? []);
            } elseif ($model === 'Clients') {
                $object->Clients = new HarnessBlestaModel($blesta['clients'] ?? []);
            } elseif ($model === 'CronTasks') {
                $object->CronTasks = new HarnessCronTasks();
            }
        }
    }

    public static function loadComponents($object, array $components)
    {
    }
}

/** Blesta\Core\Util\Events\Common\EventInterface, as far as listeners use it. */
class HarnessEvent
{
    private $name;
    private $params;

    public function __construct($name, array $params)
    {
        $this->name = $name;
        $this->params = $params;
    }

    public function getName()
    {
        return $this->name;
    }

    public function getParams()
    {
        return $this->params;
    }
}

function harness_blesta_plugin(): MailBridgePlugin
{
    putenv('MAILBRIDGE_BLESTA_SETTINGS=' . HARNESS_STATE . '/blesta_settings.php');
    file_put_contents(
        HARNESS_STATE . '/blesta_settings.php',
        '<?php return ' . var_export($GLOBALS['harness']['blesta']['settings'], true) . ';'
    );
    require_once HARNESS_ROOT . '/blesta/plugins/mail_bridge/mail_bridge_plugin.php';
    return new MailBridgePlugin();
}

/** Old-service objects as Blesta passes them: stdClass trees. */
function harness_objects($value)
{
    return json_decode(json_encode($value));
}

// ---------------------------------------------------------------- run
$mode = $scenario['mode'];
$result = null;
if ($mode === 'whmcs') {
    harness_module();
    $function = 'mailbridge_' . $scenario['function'];
    $result = $function(harness_params($scenario['params']));
} elseif ($mode === 'whmcs_static') {
    harness_module();
    $function = 'mailbridge_' . $scenario['function'];
    $result = $function();
} elseif ($mode === 'whmcs_hook') {
    require_once HARNESS_ROOT . '/whmcs/modules/servers/mailbridge/hooks.php';
    foreach ($GLOBALS['harness_hooks'][$scenario['hook']] ?? [] as $callback) {
        $callback($scenario['vars']);
    }
    $result = array_keys($GLOBALS['harness_hooks']);
} elseif ($mode === 'whmcs_curl_options') {
    harness_module();
    $client = MailBridgeClient::fromParams($scenario['params']);
    $options = $client->curlOptions('/hooks/whmcs', '{}', 'msg_test', 1700000000);
    $names = [];
    foreach (get_defined_constants(true)['curl'] as $name => $value) {
        if (strpos($name, 'CURLOPT_') === 0 && array_key_exists($value, $options)) {
            $names[$name] = $options[$value];
        }
    }
    $result = $names;
} elseif ($mode === 'blesta_event') {
    $plugin = harness_blesta_plugin();
    $event = $scenario['blesta']['event'];
    $params = $event['params'];
    if (isset($params['old_service'])) {
        $params['old_service'] = harness_objects($params['old_service']);
    }
    $plugin->onServiceEvent(new HarnessEvent($event['name'], $params));
    $result = 'done';
} elseif ($mode === 'blesta_password') {
    $plugin = harness_blesta_plugin();
    $result = $plugin->changePassword($scenario['blesta']['service_id'], $scenario['blesta']['password']);
} elseif ($mode === 'blesta_cron') {
    $plugin = harness_blesta_plugin();
    $plugin->cron('retry_outbox');
    $result = 'done';
} elseif ($mode === 'blesta_static') {
    $plugin = harness_blesta_plugin();
    $plugin->install(1);
    $result = $plugin->getEvents();
} else {
    fwrite(STDERR, "harness: unknown mode $mode\n");
    exit(2);
}
echo json_encode(['result' => $result], JSON_UNESCAPED_SLASHES), "\n";
