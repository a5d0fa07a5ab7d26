<?php
/**
 * Test harness: runs the real WHMCS module / hook file, Blesta module and Blesta plugin with
 * stubs for the billing system's own code only (WHMCS: logModuleCall, service properties,
 * localAPI, add_hook, logActivity, Capsule; Blesta: the Module base class, Input, ModuleFields,
 * View with the Form and Html helpers, Language, Loader and the Services, Clients and
 * ModuleManager models). Everything else is real: curl, json, the network, the bridge, the
 * mail server simulator.
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
date_default_timezone_set($scenario['tz'] ?? 'UTC');
if (isset($scenario['usage_page'])) {
    define('MAILBRIDGE_USAGE_PAGE', (int) $scenario['usage_page']);
}
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
    require_once __DIR__ . '/harness_whmcs_classes.php';
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
// The surface of Blesta's Module base class, components, helpers and models that the Mail
// Bridge module and plugin use (method names and arguments as in Blesta's own
// components/modules/module.php and app/models/services.php). State: blesta.json holds
// services (with fields and package), clients and module rows; module_log.json gets every
// Module::log() call.
if (!defined('DS')) {
    define('DS', DIRECTORY_SEPARATOR);
}

function harness_blesta(): array
{
    return harness_read('blesta.json', ['services' => [], 'clients' => [], 'rows' => []]);
}

function harness_blesta_save(array $state): void
{
    harness_write('blesta.json', $state);
}

/** Arrays (JSON objects) as Blesta's stdClass records; lists stay lists. */
function harness_objects($value)
{
    return json_decode(json_encode($value));
}

class Language
{
    public static $lang = [];

    public static function loadLang($name, $lang = null, $dir = null)
    {
        $file = rtrim((string) $dir, '/') . '/en_us/' . (is_array($name) ? $name[0] : $name) . '.php';
        if ($dir !== null && is_file($file)) {
            $lang = [];
            include $file;
            self::$lang = array_merge(self::$lang, $lang);
        }
    }

    public static function _($key, $return = false, ...$args)
    {
        $text = isset(self::$lang[$key]) ? vsprintf(self::$lang[$key], $args) : $key;
        if ($return) {
            return $text;
        }
        echo $text;
    }
}

class Input
{
    private $errors = false;

    public function setErrors(array $errors)
    {
        $this->errors = $errors;
    }

    public function errors()
    {
        return $this->errors;
    }
}

/** ModuleFields: keeps what the module declared so tests can read the form. */
class ModuleFields
{
    public $fields = [];
    public $html = '';

    public function label($name, $for = null)
    {
        return new HarnessModuleField($name, $for);
    }

    public function fieldText($name, $value = null, $attributes = [])
    {
        return ['type' => 'text', 'name' => $name, 'value' => $value];
    }

    public function fieldPassword($name, $attributes = [])
    {
        return ['type' => 'password', 'name' => $name];
    }

    public function fieldSelect($name, $options = [], $selected = null, $attributes = [])
    {
        return ['type' => 'select', 'name' => $name, 'options' => $options, 'selected' => $selected];
    }

    public function fieldCheckbox($name, $value = null, $checked = false, $attributes = [], $label = null)
    {
        return ['type' => 'checkbox', 'name' => $name, 'value' => $value, 'checked' => (bool) $checked];
    }

    public function setField($field)
    {
        $this->fields[] = $field;
    }

    public function setHtml($html)
    {
        $this->html .= $html;
    }
}

class HarnessModuleField
{
    public $label;
    public $for;
    public $fields = [];

    public function __construct($label, $for)
    {
        $this->label = $label;
        $this->for = $for;
    }

    public function attach($field)
    {
        $this->fields[] = $field;
    }
}

/** Blesta's Module base class, as far as modules call it. */
abstract class Module
{
    protected $config;
    public $base_uri = '/admin/';
    private $module;
    private $module_row;

    protected function loadConfig($file)
    {
        if (file_exists($file)) {
            $this->config = json_decode(file_get_contents($file));
        }
    }

    final public function setModule($module)
    {
        $this->module = $module;
    }

    final public function setModuleRow($module_row)
    {
        $this->module_row = $module_row;
    }

    final public function getModule()
    {
        return $this->module;
    }

    final public function getModuleRow($module_row_id = null)
    {
        if ($module_row_id) {
            $row = harness_blesta()['rows'][(string) $module_row_id] ?? null;
            return $row ? harness_objects($row) : false;
        }
        return $this->module_row;
    }

    final public function getModuleRows($module_group_id = null)
    {
        return array_values(harness_objects(array_values(harness_blesta()['rows'])));
    }

    public function getEmailTags()
    {
        return isset($this->config->email_tags) ? json_decode(json_encode($this->config->email_tags), true) : [];
    }

    public function getServiceName($service)
    {
        foreach ($service->fields as $field) {
            if ($field->key == ($this->config->service->name_key ?? '')) {
                return $field->value;
            }
        }
        return null;
    }

    public function errors()
    {
        return isset($this->Input) ? $this->Input->errors() : false;
    }

    protected function log($url, $data = null, $direction = 'input', $success = false)
    {
        harness_append('module_log.json', [
            'module_id' => $this->module->id ?? null, 'url' => $url, 'data' => $data,
            'direction' => $direction, 'status' => $success ? 'success' : 'error',
        ]);
        return 'harness1';
    }
}

class View
{
    public $base_uri;
    public $Form;
    public $Html;
    private $file;
    private $path = '';
    private $vars = [];

    public function __construct($file = null, $view = null)
    {
        $this->file = $file;
    }

    public function setDefaultView($path)
    {
        $this->path = $path;
    }

    public function set($name, $value = null)
    {
        $this->vars[$name] = $value;
    }

    public function fetch()
    {
        extract($this->vars);
        ob_start();
        include HARNESS_ROOT . '/blesta/' . $this->path . 'views/default/' . $this->file . '.pdt';
        return ob_get_clean();
    }
}

class HarnessForm
{
    public function create($action = null, $attributes = [])
    {
        echo '<form method="post"><input type="hidden" name="_csrf_token" value="harness">';
    }

    public function end()
    {
        echo '</form>';
    }

    public function label($name, $for = null, $attributes = [])
    {
        echo '<label for="' . htmlspecialchars((string) $for) . '">' . htmlspecialchars((string) $name) . '</label>';
    }

    public function fieldText($name, $value = null, $attributes = [])
    {
        echo '<input type="text" name="' . htmlspecialchars($name) . '" value="' . htmlspecialchars((string) $value) . '">';
    }

    public function fieldPassword($name, $attributes = [])
    {
        echo '<input type="password" name="' . htmlspecialchars($name) . '">';
    }

    public function fieldHidden($name, $value = null, $attributes = [])
    {
        echo '<input type="hidden" name="' . htmlspecialchars($name) . '" value="' . htmlspecialchars((string) $value) . '">';
    }

    public function fieldSubmit($name, $value = null, $attributes = [])
    {
        echo '<button type="submit" name="' . htmlspecialchars($name) . '">' . htmlspecialchars((string) $value) . '</button>';
    }
}

class HarnessHtml
{
    public function safe($str)
    {
        return htmlspecialchars((string) $str, ENT_QUOTES, 'UTF-8');
    }

    public function _($str, $return = false)
    {
        $safe = $this->safe($str);
        if ($return) {
            return $safe;
        }
        echo $safe;
    }
}

/** Services: get, getAllByClient, addField, editField over blesta.json. */
class HarnessServices
{
    public function get($id)
    {
        $row = harness_blesta()['services'][(string) $id] ?? null;
        return $row ? harness_objects($row) : false;
    }

    public function getAllByClient($clientId, $status = 'active')
    {
        $out = [];
        foreach (harness_blesta()['services'] as $row) {
            if ((int) $row['client_id'] === (int) $clientId && ($status === 'all' || $row['status'] === $status)) {
                $out[] = harness_objects($row);
            }
        }
        return $out;
    }

    public function addField($serviceId, array $vars)
    {
        $state = harness_blesta();
        $state['services'][(string) $serviceId]['fields'][] = [
            'key' => $vars['key'], 'value' => $vars['value'], 'encrypted' => (int) ($vars['encrypted'] ?? 0),
        ];
        harness_blesta_save($state);
    }

    public function editField($serviceId, array $vars)
    {
        $state = harness_blesta();
        foreach ($state['services'][(string) $serviceId]['fields'] as &$field) {
            if ($field['key'] === $vars['key']) {
                $field['value'] = $vars['value'];
                $field['encrypted'] = (int) ($vars['encrypted'] ?? $field['encrypted']);
            }
        }
        unset($field);
        harness_blesta_save($state);
    }
}

class HarnessClients
{
    public function get($id, $extra = true)
    {
        $row = harness_blesta()['clients'][(string) $id] ?? null;
        return $row ? harness_objects($row) : false;
    }
}

class HarnessModuleManager
{
    public function initModule($moduleId, $companyId = null)
    {
        harness_blesta_module();
        $module = new MailBridge();
        $module->setModule((object) ['id' => (int) $moduleId]);
        return $module;
    }
}

class Loader
{
    public static function loadModels($object, array $models)
    {
        $classes = ['Services' => 'HarnessServices', 'Clients' => 'HarnessClients', 'ModuleManager' => 'HarnessModuleManager'];
        foreach ($models as $model) {
            if (!isset($classes[$model])) {
                throw new RuntimeException("harness: model $model is not stubbed");
            }
            $object->{$model} = new $classes[$model]();
        }
    }

    public static function loadComponents($object, array $components)
    {
        foreach ($components as $component) {
            if ($component !== 'Input') {
                throw new RuntimeException("harness: component $component is not stubbed");
            }
            $object->Input = new Input();
        }
    }

    public static function loadHelpers($object, array $helpers)
    {
        $classes = ['Form' => 'HarnessForm', 'Html' => 'HarnessHtml'];
        foreach ($helpers as $helper) {
            $object->{$helper} = new $classes[$helper]();
            if (isset($object->view) && is_object($object->view)) {
                $object->view->{$helper} = $object->{$helper};
            }
        }
    }
}

class Plugin
{
    public $config;

    public function loadConfig($file)
    {
        $this->config = json_decode((string) file_get_contents($file));
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

function harness_blesta_module(): void
{
    require_once HARNESS_ROOT . '/blesta/components/modules/mail_bridge/mail_bridge.php';
}

/** A module argument from the scenario: {"service": id}, {"package": id}, {"row": id} or a plain value. */
function harness_blesta_arg($spec)
{
    $state = harness_blesta();
    if (is_array($spec) && count($spec) === 1 && isset($spec['service'])) {
        return harness_objects($state['services'][(string) $spec['service']]);
    }
    if (is_array($spec) && count($spec) === 1 && isset($spec['package'])) {
        return harness_objects($state['packages'][(string) $spec['package']]);
    }
    if (is_array($spec) && count($spec) === 1 && isset($spec['row'])) {
        return harness_objects($state['rows'][(string) $spec['row']]);
    }
    if (is_array($spec) && count($spec) === 1 && array_key_exists('object', $spec)) {
        return (object) $spec['object']; // posted form data: an object of arrays
    }
    return is_array($spec) && count($spec) === 1 && array_key_exists('value', $spec) ? $spec['value'] : $spec;
}

/** ModuleFields and friends as plain data for the test. */
function harness_plain($value)
{
    if ($value instanceof ModuleFields) {
        return ['fields' => array_map('harness_plain', $value->fields), 'html' => $value->html];
    }
    if ($value instanceof HarnessModuleField) {
        return ['label' => $value->label, 'for' => $value->for, 'fields' => $value->fields];
    }
    return $value;
}

// ---------------------------------------------------------------- run
$mode = $scenario['mode'];
$result = null;
if ($mode === 'whmcs') {
    harness_module();
    $function = 'mailbridge_' . $scenario['function'];
    try {
        $result = $function(harness_params($scenario['params']));
    } catch (Exception $e) {
        if (get_class($e) !== 'Exception') {
            throw $e; // PHP warnings (ErrorException) stay failures
        }
        $result = ['exception' => $e->getMessage()]; // what WHMCS shows of a Loader's exception
    }
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
} elseif ($mode === 'blesta_module') {
    harness_blesta_module();
    $module = new MailBridge();
    $module->setModule((object) ['id' => 5]);
    $rowId = $scenario['row'] ?? null;
    if ($rowId !== null) {
        $module->setModuleRow($module->getModuleRow($rowId));
    }
    $args = array_map('harness_blesta_arg', $scenario['args'] ?? []);
    $value = $module->{$scenario['method']}(...$args);
    $result = ['value' => harness_plain($value), 'errors' => $module->errors() ?: null];
} elseif ($mode === 'blesta_plugin') {
    require_once HARNESS_ROOT . '/blesta/plugins/mail_bridge/mail_bridge_plugin.php';
    $plugin = new MailBridgePlugin();
    $event = $scenario['event'];
    $params = $event['params'];
    if (isset($params['old_service'])) {
        $params['old_service'] = harness_objects($params['old_service']);
    }
    $plugin->onServiceEdited(new HarnessEvent($event['name'], $params));
    $result = $plugin->getEvents();
} else {
    fwrite(STDERR, "harness: unknown mode $mode\n");
    exit(2);
}
echo json_encode(['result' => $result], JSON_UNESCAPED_SLASHES), "\n";
