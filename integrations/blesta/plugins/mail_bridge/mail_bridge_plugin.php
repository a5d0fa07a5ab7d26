<?php
/**
 * Mail Bridge plugin for Blesta: reports a service moved to another client.
 *
 * Provisioning is done by the Mail Bridge module (components/modules/mail_bridge). Blesta calls
 * no module method when a service changes owner, so this plugin listens to Services.editAfter
 * and, for a service whose client changed and whose package has "Report a service moved to
 * another client" ticked (package meta report_moves = 1), asks the module to report it. The
 * module signs the event with its bridge's credentials, writes Blesta's module log (secrets
 * masked) and records the request on the service, so a failed report shows on the service's
 * Mail Bridge tab with a button to send it again; the module also reports any unreported move
 * before its next action. The plugin keeps no files: no outbox, no log of its own.
 */

class MailBridgePlugin extends Plugin
{
    const MODULE_CLASS = 'MailBridge';

    /** Models Loader::loadModels() sets (declared: PHP 8.2 deprecates dynamic properties). */
    public $Services;
    public $ModuleManager;

    public function __construct()
    {
        if (class_exists('Language')) {
            Language::loadLang('mail_bridge_plugin', null, __DIR__ . DIRECTORY_SEPARATOR . 'language' . DIRECTORY_SEPARATOR);
        }
        $this->loadConfig(__DIR__ . DIRECTORY_SEPARATOR . 'config.json');
    }

    public function getEvents()
    {
        return [['event' => 'Services.editAfter', 'callback' => ['this', 'onServiceEdited']]];
    }

    /**
     * Services.editAfter (params service_id, vars, old_service): when vars.client_id differs
     * from the old service's client, report the move through the module. Never throws: a
     * plugin must not break Blesta's page.
     */
    public function onServiceEdited($event)
    {
        $params = (array) $event->getParams();
        $vars = (array) ($params['vars'] ?? []);
        $old = $params['old_service'] ?? null;
        if (!isset($vars['client_id']) || !is_object($old) || (int) $vars['client_id'] === (int) ($old->client_id ?? 0)) {
            return;
        }
        try {
            Loader::loadModels($this, ['Services', 'ModuleManager']);
            $service = $this->Services->get((int) ($params['service_id'] ?? 0));
            $package = $service->package ?? null;
            if (!$service || !$package || (string) ($package->meta->report_moves ?? '') !== '1') {
                return;
            }
            $module = $this->ModuleManager->initModule($package->module_id);
            if (!$module || get_class($module) !== self::MODULE_CLASS) {
                return;
            }
            $module->setModuleRow($module->getModuleRow($service->module_row_id));
            $module->reportClientMove($package, $service);
        } catch (Throwable $e) {
            // The module reports the move before its next action; nothing else to do here.
        }
    }
}
