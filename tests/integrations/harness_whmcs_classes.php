<?php
/**
 * Namespaced WHMCS classes the module uses, for harness.php: Capsule (the database, only
 * table()->where()->update() on tblhosting rows kept in tblhosting.json) and the service
 * status constants. Query builder calls as in
 * https://developers.whmcs.com/provisioning-modules/usage-update/ .
 */

namespace WHMCS\Database {

    class HarnessQuery
    {
        private $table;
        private $wheres = [];

        public function __construct(string $table)
        {
            $this->table = $table;
        }

        public function where($column, $operator, $value = null)
        {
            if (func_num_args() === 2) {
                [$operator, $value] = ['=', $operator];
            }
            if ($operator !== '=') {
                throw new \RuntimeException("harness: only = is stubbed, not $operator");
            }
            $this->wheres[] = [$column, $value];
            return $this;
        }

        /** Updates the matching rows; the number of rows matched. */
        public function update(array $values)
        {
            $rows = harness_read($this->table . '.json', []);
            $count = 0;
            foreach ($rows as &$row) {
                foreach ($this->wheres as [$column, $value]) {
                    if ((string) ($row[$column] ?? '') !== (string) $value) {
                        continue 2;
                    }
                }
                foreach ($values as $column => $value) {
                    $row[$column] = is_object($value) ? (string) $value : $value;
                }
                $count++;
            }
            unset($row);
            harness_write($this->table . '.json', $rows);
            harness_append('capsule.json', ['table' => $this->table, 'where' => $this->wheres, 'values' => $values]);
            return $count;
        }
    }

    class Capsule
    {
        public static function table(string $table)
        {
            return new HarnessQuery($table);
        }
    }
}

namespace WHMCS\Service {

    class Status
    {
        const ACTIVE = 'Active';
        const SUSPENDED = 'Suspended';
    }
}
